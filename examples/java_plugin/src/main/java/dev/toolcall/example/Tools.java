package dev.toolcall.example;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The plugin's two tools. Each declares its parameters once: the JSON Schema sent to the
 * registry and the check run on every call are both built from that list, so they cannot
 * disagree. The registry and the LLMService validate before calling, but any local process
 * can call the plugin's port directly, so the plugin checks again (docs/plugins.md, "What a
 * plugin may trust").
 */
final class Tools {
  private Tools() {}

  /** One parameter: a JSON type ("string" or "integer"), with bounds for integers. */
  record Param(String name, String type, boolean required, String description, long min, long max) {
    static Param string(String name, boolean required, String description) {
      return new Param(name, "string", required, description, 0, 0);
    }

    static Param integer(String name, String description, long min, long max) {
      return new Param(name, "integer", false, description, min, max);
    }
  }

  /** What a tool does with checked arguments; throw ToolFailure for an expected failure. */
  interface Handler {
    Object run(Map<String, Object> args) throws Exception;
  }

  /** An expected failure: the model gets exactly this message, and no stack trace is logged. */
  static final class ToolFailure extends Exception {
    ToolFailure(String message) {
      super(message);
    }
  }

  record Tool(
      String name,
      String description,
      List<Param> params,
      double timeoutSeconds,
      boolean async,
      String ackMessage,
      Handler handler) {

    Map<String, Object> schema() {
      Map<String, Object> properties = new LinkedHashMap<>();
      List<String> required = new java.util.ArrayList<>();
      for (Param p : params) {
        Map<String, Object> property = new LinkedHashMap<>();
        property.put("type", p.type());
        property.put("description", p.description());
        if (p.type().equals("integer")) {
          property.put("minimum", p.min());
          property.put("maximum", p.max());
        }
        properties.put(p.name(), property);
        if (p.required()) {
          required.add(p.name());
        }
      }
      Map<String, Object> schema = new LinkedHashMap<>();
      schema.put("type", "object");
      schema.put("properties", properties);
      schema.put("required", required);
      schema.put("additionalProperties", false);
      return schema;
    }

    /** Why {@code args} do not fit the parameters ("" when they do), worded like the SDK's. */
    String check(Map<String, Object> args) {
      for (String key : args.keySet()) {
        if (params.stream().noneMatch(p -> p.name().equals(key))) {
          return "arguments: unexpected property '" + key + "'";
        }
      }
      for (Param p : params) {
        Object value = args.get(p.name());
        if (value == null) {
          if (p.required()) {
            return "arguments: '" + p.name() + "' is a required property";
          }
          continue;
        }
        if (p.type().equals("string") && !(value instanceof String)) {
          return "arguments." + p.name() + ": must be a string";
        }
        if (p.type().equals("integer")) {
          if (!(value instanceof Double d) || d != Math.rint(d)) {
            return "arguments." + p.name() + ": must be an integer";
          }
          if (d < p.min() || d > p.max()) {
            return "arguments." + p.name() + ": must be from " + p.min() + " to " + p.max();
          }
        }
      }
      return "";
    }
  }

  static final List<Param> TEXT = List.of(Param.string("text", true, "The text to work on."));

  /** Sync: answers at once with counts of the text. */
  static final Tool TEXT_STATS =
      new Tool(
          "text_stats",
          "Count the words, characters and lines of a text.",
          TEXT,
          10,
          false,
          "",
          args -> {
            String text = (String) args.get("text");
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("words", text.isBlank() ? 0 : text.trim().split("\\s+").length);
            out.put("characters", text.codePointCount(0, text.length()));
            out.put("lines", text.isEmpty() ? 0 : text.split("\n", -1).length);
            return out;
          });

  /**
   * Async: the model gets the ack at once; the digest arrives later on Subscribe. It waits
   * {@code delay_ms} first, to stand in for slow work: the wait ends early, by interruption,
   * when the call is cancelled, its deadline passes or its 5 s timeout ends.
   */
  static final Tool DIGEST =
      new Tool(
          "digest",
          "Hash a text (SHA-256 by default) after an optional delay; the result follows later.",
          List.of(
              TEXT.get(0),
              Param.string("algorithm", false, "A Java MessageDigest name, e.g. SHA-256, SHA-1."),
              Param.integer("delay_ms", "How long to work before answering.", 0, 60_000)),
          5, // a delay_ms past it shows the plugin's own timer at work
          true,
          "Digest started; the result will follow.",
          args -> {
            long delayMs = args.get("delay_ms") == null ? 0 : ((Double) args.get("delay_ms")).longValue();
            String algorithm = args.get("algorithm") == null ? "SHA-256" : (String) args.get("algorithm");
            Thread.sleep(delayMs); // interrupted on cancellation or deadline
            MessageDigest digest;
            try {
              digest = MessageDigest.getInstance(algorithm);
            } catch (NoSuchAlgorithmException e) {
              throw new ToolFailure("unknown algorithm '" + algorithm + "'; try SHA-256");
            }
            byte[] hash = digest.digest(((String) args.get("text")).getBytes(StandardCharsets.UTF_8));
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("algorithm", digest.getAlgorithm());
            out.put("hex", HexFormat.of().formatHex(hash));
            return out;
          });

  static final List<Tool> ALL = List.of(TEXT_STATS, DIGEST);
}
