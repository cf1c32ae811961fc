package dev.toolcall.example;

import com.google.protobuf.ListValue;
import com.google.protobuf.NullValue;
import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * google.protobuf.Struct / Value to plain Java values and back: Map, List, String, Double,
 * Boolean and null. JSON numbers arrive as doubles (Struct has no integers), so a tool that
 * wants an integer checks that the double is whole.
 */
final class Json {
  private Json() {}

  static Map<String, Object> fromStruct(Struct struct) {
    Map<String, Object> out = new LinkedHashMap<>();
    struct.getFieldsMap().forEach((key, value) -> out.put(key, fromValue(value)));
    return out;
  }

  static Object fromValue(Value value) {
    switch (value.getKindCase()) {
      case NUMBER_VALUE:
        return value.getNumberValue();
      case STRING_VALUE:
        return value.getStringValue();
      case BOOL_VALUE:
        return value.getBoolValue();
      case STRUCT_VALUE:
        return fromStruct(value.getStructValue());
      case LIST_VALUE:
        List<Object> list = new ArrayList<>();
        for (Value item : value.getListValue().getValuesList()) {
          list.add(fromValue(item));
        }
        return list;
      default: // NULL_VALUE, or not set
        return null;
    }
  }

  /** Refuses what JSON cannot hold (NaN, infinities, other types) instead of sending it. */
  static Value toValue(Object x) {
    if (x == null) {
      return Value.newBuilder().setNullValue(NullValue.NULL_VALUE).build();
    }
    if (x instanceof String s) {
      return Value.newBuilder().setStringValue(s).build();
    }
    if (x instanceof Boolean b) {
      return Value.newBuilder().setBoolValue(b).build();
    }
    if (x instanceof Number n) {
      double d = n.doubleValue();
      if (!Double.isFinite(d)) {
        throw new IllegalArgumentException("result holds " + d + ", which JSON cannot carry");
      }
      return Value.newBuilder().setNumberValue(d).build();
    }
    if (x instanceof Map<?, ?> map) {
      return Value.newBuilder().setStructValue(toStruct(map)).build();
    }
    if (x instanceof List<?> list) {
      ListValue.Builder values = ListValue.newBuilder();
      for (Object item : list) {
        values.addValues(toValue(item));
      }
      return Value.newBuilder().setListValue(values).build();
    }
    throw new IllegalArgumentException("result is not JSON (" + x.getClass().getSimpleName() + ")");
  }

  static Struct toStruct(Map<?, ?> map) {
    Struct.Builder struct = Struct.newBuilder();
    map.forEach((key, value) -> struct.putFields(String.valueOf(key), toValue(value)));
    return struct.build();
  }
}
