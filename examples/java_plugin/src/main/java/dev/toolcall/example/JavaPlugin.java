package dev.toolcall.example;

import dev.toolcall.example.Tools.Tool;
import dev.toolcall.example.Tools.ToolFailure;
import io.grpc.Context;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.health.v1.HealthCheckResponse.ServingStatus;
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder;
import io.grpc.protobuf.services.HealthStatusManager;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.math.BigDecimal;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.Executor;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Collectors;
import toolcall.v1.Callback.ToolCallbackInvokeRequest;
import toolcall.v1.Callback.ToolCallbackInvokeResponse;
import toolcall.v1.Registry.ClearRequest;
import toolcall.v1.Registry.CreateLeaseRequest;
import toolcall.v1.Registry.CreateLeaseResponse;
import toolcall.v1.Registry.KeepAliveRequest;
import toolcall.v1.Registry.KeepAliveResponse;
import toolcall.v1.Registry.RegisterRequest;
import toolcall.v1.Registry.RegisterResponse;
import toolcall.v1.Registry.RevokeLeaseRequest;
import toolcall.v1.ToolCallbackGrpc;
import toolcall.v1.ToolRegistryGrpc;
import toolcall.v1.ToolRegistryGrpc.ToolRegistryBlockingStub;
import toolcall.v1.Tools.ToolDefinition;
import toolcall.v1.Tools.ToolMode;

/**
 * A toolcall plugin in Java, on stubs that the Maven build generates from protos/.
 *
 * <p>It serves ToolCallback.Invoke on a loopback port (with gRPC health), takes a lease from
 * the registry, registers its two tools under it (text_stats, sync; digest, async), keeps the
 * lease alive every ttl/3, and registers again when the lease is lost (NOT_FOUND: registry
 * restart or expiry) or when KeepAlive reports fewer tools than it registered, in total or in
 * any role. Each call runs on a bounded worker pool under the tool's timeout or the caller's
 * deadline, whichever comes first, and is interrupted when the caller cancels. SIGTERM/SIGINT
 * (a shutdown hook) clear its tools and revoke the lease before it exits.
 *
 * <p>Environment, as the Python SDK: TOOLCALL_REGISTRY_ADDRESS (127.0.0.1:48911),
 * TOOLCALL_TOKEN or TOOLCALL_TOKEN_FILE, TOOLCALL_PLUGIN_ID (java_text),
 * TOOLCALL_PLUGIN_ADDRESS (127.0.0.1:0; TCP loopback only), TOOLCALL_PLUGIN_LEASE_TTL (6
 * seconds), TOOLCALL_PLUGIN_WORKERS (min(32, CPUs + 4)), TOOLCALL_LOG_LEVEL (DEBUG logs each
 * call).
 */
public final class JavaPlugin {
  /** Calls waiting for a worker, at most; past it a call gets RESOURCE_EXHAUSTED at once. */
  static final int MAX_WAITING_CALLS = 1024;

  static final Map<String, Tool> TOOLS =
      Tools.ALL.stream().collect(Collectors.toMap(Tool::name, t -> t));

  final String registryAddress;
  final String token;
  final String pluginId;
  final String source;
  final String listen;
  final double leaseTtlS;
  final boolean logCalls; // TOOLCALL_LOG_LEVEL=DEBUG: one line per call
  final ThreadPoolExecutor workers;
  final ScheduledExecutorService timer =
      Executors.newSingleThreadScheduledExecutor(daemon("toolcall-timer"));
  final HealthStatusManager health = new HealthStatusManager();

  ManagedChannel channel;
  ToolRegistryBlockingStub registry;
  Server server;
  String callbackAddress = "";
  Thread loop;

  // Registration state, written by the loop thread, read by the shutdown hook.
  volatile boolean stopping;
  volatile String leaseId = "";
  int registered; // tools the registry accepted
  Map<String, Integer> perRole = new HashMap<>(); // of them, per role (affected_roles)
  boolean partial; // a registration pass was cut short: the counts are not ours yet

  JavaPlugin(Map<String, String> env) {
    registryAddress = setting(env, "REGISTRY_ADDRESS", "127.0.0.1:48911");
    token = token(env);
    pluginId = setting(env, "PLUGIN_ID", "java_text");
    source = "plugin:" + pluginId;
    listen = setting(env, "PLUGIN_ADDRESS", "127.0.0.1:0");
    leaseTtlS = number(env, "PLUGIN_LEASE_TTL", 6, 1, 300);
    logCalls = setting(env, "LOG_LEVEL", "INFO").equalsIgnoreCase("DEBUG");
    int n = (int) number(env, "PLUGIN_WORKERS", Math.min(32, cpus() + 4), 1, 1024);
    workers =
        new ThreadPoolExecutor(
            n, n, 60, TimeUnit.SECONDS, new ArrayBlockingQueue<>(MAX_WAITING_CALLS),
            daemon("toolcall-worker"));
  }

  public static void main(String[] args) throws Exception {
    JavaPlugin plugin = null;
    try {
      plugin = new JavaPlugin(System.getenv());
      plugin.start();
    } catch (IllegalArgumentException e) { // a setting: bad usage
      System.err.println("error: " + e.getMessage());
      System.exit(2);
    } catch (IOException e) {
      System.err.println("error: cannot listen on " + plugin.listen + ": " + e.getMessage());
      System.exit(1);
    }
    Runtime.getRuntime().addShutdownHook(new Thread(plugin::stop, "toolcall-shutdown"));
    plugin.server.awaitTermination();
  }

  // --- serving ----------------------------------------------------------------------------

  void start() throws IOException {
    int colon = listen.lastIndexOf(':');
    if (listen.startsWith("unix:") || colon < 0) {
      throw new IllegalArgumentException(
          "TOOLCALL_PLUGIN_ADDRESS must be host:port on loopback, got '" + listen + "'");
    }
    String host = listen.substring(0, colon).replace("[", "").replace("]", "");
    InetAddress address = InetAddress.getByName(host);
    if (!address.isLoopbackAddress()) {
      // The registry refuses other callback addresses; never listen beyond this machine.
      throw new IllegalArgumentException(listen + " is not a loopback address");
    }
    int port = Integer.parseInt(listen.substring(colon + 1));
    health.setStatus("toolcall.v1.ToolCallback", ServingStatus.SERVING);
    server =
        NettyServerBuilder.forAddress(new InetSocketAddress(address, port))
            // Invoke only checks the arguments (a message is at most 4 MiB) and hands the
            // call to the worker pool, so it runs on the transport's threads: one thread hop
            // less per call (plugin CPU 517 -> 357 us per call in bench B-java).
            .directExecutor()
            .addService(new Callback())
            .addService(health.getHealthService())
            .build()
            .start();
    int bound = ((InetSocketAddress) server.getListenSockets().get(0)).getPort();
    callbackAddress = listen.substring(0, colon) + ":" + bound;
    log("serving ToolCallback on %s; registry %s", callbackAddress, registryAddress);

    Metadata headers = new Metadata();
    if (!token.isEmpty()) {
      headers.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + token);
    }
    channel = Grpc.newChannelBuilder(registryAddress, InsecureChannelCredentials.create()).build();
    registry =
        ToolRegistryGrpc.newBlockingStub(channel)
            .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
    loop = new Thread(this::registrationLoop, "toolcall-registration");
    loop.setDaemon(true);
    loop.start();
  }

  /** ToolCallback: look the tool up, check the arguments, run it within its deadline. */
  final class Callback extends ToolCallbackGrpc.ToolCallbackImplBase {
    @Override
    public void invoke(
        ToolCallbackInvokeRequest request, StreamObserver<ToolCallbackInvokeResponse> responses) {
      if (logCalls) {
        log("call %s (call_id %s)", request.getName(), request.getCallId());
      }
      Tool tool = TOOLS.get(request.getName());
      if (tool == null) {
        // The caller's view of this plugin is stale: a status, not a tool error.
        responses.onError(
            Status.NOT_FOUND
                .withDescription(
                    "tool '" + request.getName() + "' is not served by plugin '" + pluginId + "'")
                .asRuntimeException());
        return;
      }
      var call = (ServerCallStreamObserver<ToolCallbackInvokeResponse>) responses;
      // Cancellation is handled through the Context below; this only keeps a late onNext
      // (after the caller went away) from throwing.
      call.setOnCancelHandler(() -> {});
      Map<String, Object> args = Json.fromStruct(request.getArguments());
      String problem = tool.check(args);
      if (!problem.isEmpty()) {
        reply(call, error("INVALID_ARGUMENT: " + problem));
        return;
      }
      Context callContext = Context.current();
      // Ends at the tool's timeout or at the caller's deadline, whichever is first, and when
      // the caller cancels.
      Context.CancellableContext scope =
          callContext.withDeadlineAfter(
              (long) (tool.timeoutSeconds() * 1000), TimeUnit.MILLISECONDS, timer);
      AtomicBoolean answered = new AtomicBoolean();
      Executor direct = Runnable::run;
      Future<?> work;
      try {
        work =
            workers.submit(
                () -> {
                  ToolCallbackInvokeResponse response = run(tool, args);
                  if (response != null && answered.compareAndSet(false, true)) {
                    reply(call, response);
                    scope.cancel(null); // releases the timer
                  }
                });
      } catch (RejectedExecutionException e) {
        scope.cancel(null);
        responses.onError(
            Status.RESOURCE_EXHAUSTED
                .withDescription(
                    "plugin '" + pluginId + "' has " + MAX_WAITING_CALLS + " calls waiting")
                .asRuntimeException());
        return;
      }
      scope.addListener(
          ended -> {
            if (!answered.compareAndSet(false, true)) {
              return; // the tool answered first
            }
            work.cancel(true); // interrupts the handler's thread
            if (!callContext.isCancelled()) {
              // Our own timer: the caller is still waiting, so tell it why.
              String limit = BigDecimal.valueOf(tool.timeoutSeconds()).stripTrailingZeros().toPlainString();
              reply(
                  call,
                  error("DEADLINE_EXCEEDED: tool '" + tool.name() + "' did not finish within " + limit + "s"));
            } // else the caller cancelled or its deadline passed: gRPC has told it
          },
          direct);
    }
  }

  /** Runs a handler; null when it was interrupted (the call ended without it). */
  ToolCallbackInvokeResponse run(Tool tool, Map<String, Object> args) {
    try {
      Object output = tool.handler().run(args);
      return ToolCallbackInvokeResponse.newBuilder().setOutput(Json.toValue(output)).build();
    } catch (InterruptedException e) {
      log("tool %s stopped: its call was cancelled or ran out of time", tool.name());
      return null;
    } catch (ToolFailure e) {
      log("tool %s failed: %s", tool.name(), e.getMessage());
      return error(e.getMessage());
    } catch (Exception e) {
      log("tool %s raised %s", tool.name(), e);
      e.printStackTrace(); // here, in the plugin's log; the model gets one line
      return error(e.getClass().getSimpleName() + ": " + e.getMessage());
    }
  }

  static ToolCallbackInvokeResponse error(String message) {
    return ToolCallbackInvokeResponse.newBuilder()
        .setOutput(Json.toValue(null))
        .setIsError(true)
        .setError(message)
        .build();
  }

  static void reply(StreamObserver<ToolCallbackInvokeResponse> call, ToolCallbackInvokeResponse r) {
    call.onNext(r);
    call.onCompleted();
  }

  // --- registry: lease, register, keep alive --------------------------------------------

  /** The registry stub with a deadline: a registry that hangs must not hang the loop. */
  ToolRegistryBlockingStub registry(double seconds) {
    return registry.withDeadlineAfter((long) (seconds * 1000), TimeUnit.MILLISECONDS);
  }

  double createLease() {
    CreateLeaseResponse lease =
        registry(Math.max(1, leaseTtlS / 3))
            .createLease(
                CreateLeaseRequest.newBuilder().setTtlSeconds(leaseTtlS).setHolder(source).build());
    leaseId = lease.getLeaseId();
    log("lease %s from registry %s", leaseId, lease.getInstanceId());
    return (lease.getTtlSeconds() > 0 ? lease.getTtlSeconds() : leaseTtlS) / 3;
  }

  void registerTools() {
    registered = 0;
    perRole = new HashMap<>();
    partial = true;
    for (Tool tool : Tools.ALL) {
      ToolDefinition.Builder definition =
          ToolDefinition.newBuilder()
              .setName(tool.name())
              .setDescription(tool.description())
              .setParameters(Json.toStruct(tool.schema()))
              .setCallbackAddress(callbackAddress)
              .setSource(source)
              .setTimeoutSeconds(tool.timeoutSeconds())
              .setMode(tool.async() ? ToolMode.TOOL_MODE_ASYNC : ToolMode.TOOL_MODE_SYNC)
              .setAckMessage(tool.ackMessage());
      RegisterResponse reply;
      try {
        reply =
            registry(Math.max(1, leaseTtlS / 3))
                .register(
                    RegisterRequest.newBuilder().setLeaseId(leaseId).setTool(definition).build());
      } catch (StatusRuntimeException e) {
        if (e.getStatus().getCode() != Status.Code.INVALID_ARGUMENT) {
          throw e;
        }
        // The definition itself is refused: trying again cannot help.
        log("tool %s refused: %s", tool.name(), e.getStatus().getDescription());
        continue;
      }
      if (!reply.getOk()) {
        log("tool %s not registered: %s", tool.name(), reply.getFailedRolesList());
        continue;
      }
      registered++;
      for (String role : reply.getAffectedRolesList()) {
        perRole.merge(role, 1, Integer::sum);
      }
    }
    partial = false;
    log("registered %s under lease %s", TOOLS.keySet(), leaseId);
  }

  /**
   * Where the registry holds fewer of our tools than we registered ("" if nowhere). tools
   * counts distinct names bound to the lease (fewer: `toolcall tools clear`, a replacement);
   * tools_per_role shows a tool removed from one of its roles only, which the name count
   * cannot. A registry that sends no tools_per_role leaves the map empty: names alone decide.
   */
  String missing(KeepAliveResponse reply) {
    if (reply.getTools() < registered) {
      return reply.getTools() + " of " + registered + " tools";
    }
    Map<String, Integer> held = reply.getToolsPerRoleMap();
    if (held.isEmpty()) {
      return "";
    }
    return perRole.entrySet().stream()
        .filter(e -> held.getOrDefault(e.getKey(), 0) < e.getValue())
        .map(e -> held.getOrDefault(e.getKey(), 0) + " of " + e.getValue() + " in role '" + e.getKey() + "'")
        .collect(Collectors.joining("; "));
  }

  /** Until stop: (re)registers when there is no lease, else keeps it alive, as the SDK does. */
  void registrationLoop() {
    long backoffMs = 100;
    double intervalS = leaseTtlS / 3;
    String lastProblem = "";
    while (!stopping) {
      try {
        if (leaseId.isEmpty()) {
          intervalS = createLease();
          registerTools();
        } else if (partial) {
          registerTools();
        } else {
          KeepAliveResponse reply =
              registry(Math.max(1, leaseTtlS / 3))
                  .keepAlive(KeepAliveRequest.newBuilder().setLeaseId(leaseId).build());
          intervalS = (reply.getTtlSeconds() > 0 ? reply.getTtlSeconds() : leaseTtlS) / 3;
          String shortBy = missing(reply);
          if (!shortBy.isEmpty()) {
            log("the registry lost some of our tools (%s); registering again", shortBy);
            registerTools();
          }
        }
        backoffMs = 100;
        lastProblem = "";
        Thread.sleep((long) (intervalS * 1000));
      } catch (StatusRuntimeException e) {
        if (stopping) {
          return;
        }
        if (e.getStatus().getCode() == Status.Code.NOT_FOUND) {
          log("lease is gone (expired or the registry restarted); registering again");
          leaseId = "";
          continue;
        }
        String problem = e.getStatus().getCode() + ": " + e.getStatus().getDescription();
        if (!problem.equals(lastProblem)) {
          log("registry at %s: %s; retrying", registryAddress, problem);
        }
        lastProblem = problem;
        // gRPC's own reconnect backoff grows to minutes; ours stays at most 2 s.
        channel.resetConnectBackoff();
        try {
          Thread.sleep(backoffMs);
        } catch (InterruptedException stop) {
          return;
        }
        backoffMs = Math.min(backoffMs * 2, 2000);
      } catch (InterruptedException e) {
        return;
      }
    }
  }

  /** The shutdown hook: clear and revoke (1 s each, best effort), then stop serving. */
  void stop() {
    stopping = true;
    loop.interrupt();
    try {
      loop.join(1000);
    } catch (InterruptedException ignored) {
      // shutting down anyway
    }
    log("stopping: clearing %s", source);
    if (!leaseId.isEmpty()) {
      try {
        int removed =
            registry(1).clear(ClearRequest.newBuilder().setSource(source).build()).getRemoved();
        registry(1).revokeLease(RevokeLeaseRequest.newBuilder().setLeaseId(leaseId).build());
        log("cleared %d tools, lease revoked", removed);
      } catch (StatusRuntimeException e) {
        log("could not clear: %s (the lease expires on its own)", e.getStatus());
      }
    }
    health.enterTerminalState();
    server.shutdown();
    try {
      if (!server.awaitTermination(2, TimeUnit.SECONDS)) {
        server.shutdownNow(); // calls still running after the grace period are cancelled
      }
    } catch (InterruptedException ignored) {
      server.shutdownNow();
    }
    channel.shutdownNow();
    workers.shutdownNow();
  }

  // --- settings and small helpers ----------------------------------------------------------

  static String setting(Map<String, String> env, String name, String fallback) {
    String value = env.get("TOOLCALL_" + name);
    return value == null || value.isEmpty() ? fallback : value;
  }

  static double number(Map<String, String> env, String name, double fallback, double min, double max) {
    String raw = setting(env, name, "");
    double value;
    try {
      value = raw.isEmpty() ? fallback : Double.parseDouble(raw);
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException("TOOLCALL_" + name + " must be a number, got '" + raw + "'");
    }
    if (!(value >= min && value <= max)) {
      throw new IllegalArgumentException("TOOLCALL_" + name + " must be from " + min + " to " + max);
    }
    return value;
  }

  /** TOOLCALL_TOKEN, or the content of TOOLCALL_TOKEN_FILE (not both), as the SDK reads it. */
  static String token(Map<String, String> env) {
    String value = setting(env, "TOKEN", "");
    String path = setting(env, "TOKEN_FILE", "");
    if (!value.isEmpty() && !path.isEmpty()) {
      throw new IllegalArgumentException("set TOOLCALL_TOKEN or TOOLCALL_TOKEN_FILE, not both");
    }
    if (!path.isEmpty()) {
      try {
        byte[] raw = Files.readAllBytes(Path.of(path));
        if (raw.length > 4096) {
          throw new IllegalArgumentException("token file '" + path + "' is larger than 4096 bytes");
        }
        value = new String(raw, StandardCharsets.UTF_8).strip();
      } catch (IOException e) {
        throw new IllegalArgumentException("cannot read token file '" + path + "': " + e);
      }
      if (value.isEmpty()) {
        throw new IllegalArgumentException("token file '" + path + "' is empty");
      }
    }
    if (!value.chars().allMatch(c -> c > 0x20 && c < 0x7f)) {
      throw new IllegalArgumentException("the token must be printable ASCII without spaces");
    }
    return value;
  }

  static int cpus() {
    return Runtime.getRuntime().availableProcessors();
  }

  static java.util.concurrent.ThreadFactory daemon(String name) {
    return runnable -> {
      Thread thread = new Thread(runnable, name);
      thread.setDaemon(true);
      return thread;
    };
  }

  void log(String format, Object... args) {
    System.err.println(Instant.now() + " [" + pluginId + "] " + String.format(format, args));
  }
}
