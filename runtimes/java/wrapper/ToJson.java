package gristmill;

import java.lang.reflect.Array;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.RecordComponent;
import java.math.BigDecimal;
import java.time.temporal.TemporalAccessor;
import java.util.ArrayList;
import java.util.Base64;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalDouble;
import java.util.OptionalInt;
import java.util.OptionalLong;
import java.util.UUID;

/** Java to JSON: the job's result as JSON text, or Unserialisable saying why it is not. */
final class ToJson {
    private ToJson() {}

    /** How deep a value may nest, either way: past it a job's value is refused, not a stack overflow. */
    static final int MAX_DEPTH = 500;

    static String write(Object value) {
        StringBuilder out = new StringBuilder();
        write(value, out, 0, new IdentityHashMap<>());
        return out.toString();
    }

    private static void write(Object value, StringBuilder out, int depth, IdentityHashMap<Object, Boolean> open) {
        if (depth > MAX_DEPTH) throw new Unserialisable("the result nests more than " + MAX_DEPTH + " levels deep");
        if (value == null) {
            out.append("null");
        } else if (value instanceof String || value instanceof Character || value instanceof CharSequence) {
            out.append(quote(value.toString()));
        } else if (value instanceof Boolean) {
            out.append(value);
        } else if (value instanceof Double || value instanceof Float) {
            double number = ((Number) value).doubleValue();
            if (Double.isNaN(number) || Double.isInfinite(number)) {
                throw new Unserialisable(number + " is not a JSON number");
            }
            out.append(value instanceof Float ? Float.toString((Float) value) : Double.toString(number));
        } else if (value instanceof BigDecimal) {
            out.append(((BigDecimal) value).toString());
        } else if (value instanceof Number) {
            out.append(value.toString());
        } else if (value instanceof Optional) {
            write(((Optional<?>) value).orElse(null), out, depth, open);
        } else if (value instanceof OptionalInt) {
            OptionalInt o = (OptionalInt) value;
            out.append(o.isPresent() ? Integer.toString(o.getAsInt()) : "null");
        } else if (value instanceof OptionalLong) {
            OptionalLong o = (OptionalLong) value;
            out.append(o.isPresent() ? Long.toString(o.getAsLong()) : "null");
        } else if (value instanceof OptionalDouble) {
            OptionalDouble o = (OptionalDouble) value;
            write(o.isPresent() ? (Object) o.getAsDouble() : null, out, depth, open);
        } else if (value instanceof Enum) {
            out.append(quote(((Enum<?>) value).name()));
        } else if (value instanceof UUID || value instanceof TemporalAccessor) {
            out.append(quote(value.toString()));
        } else if (value instanceof byte[]) {
            out.append(quote(Base64.getEncoder().encodeToString((byte[]) value)));
        } else {
            if (open.put(value, Boolean.TRUE) != null) throw new Unserialisable("the result contains itself");
            if (value instanceof Map) {
                out.append('{');
                boolean first = true;
                for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
                    if (!first) out.append(',');
                    first = false;
                    Object key = entry.getKey();
                    out.append(quote(key instanceof Enum ? ((Enum<?>) key).name() : String.valueOf(key))).append(':');
                    write(entry.getValue(), out, depth + 1, open);
                }
                out.append('}');
            } else if (value instanceof Iterable) {
                out.append('[');
                boolean first = true;
                for (Object item : (Iterable<?>) value) {
                    if (!first) out.append(',');
                    first = false;
                    write(item, out, depth + 1, open);
                }
                out.append(']');
            } else if (value.getClass().isArray()) {
                out.append('[');
                for (int i = 0, n = Array.getLength(value); i < n; i++) {
                    if (i > 0) out.append(',');
                    write(Array.get(value, i), out, depth + 1, open);
                }
                out.append(']');
            } else if (value.getClass().isRecord()) {
                out.append('{');
                boolean first = true;
                for (RecordComponent component : value.getClass().getRecordComponents()) {
                    if (!first) out.append(',');
                    first = false;
                    out.append(quote(component.getName())).append(':');
                    Object part;
                    try {
                        Method accessor = component.getAccessor();
                        accessor.setAccessible(true);
                        part = accessor.invoke(value);
                    } catch (ReflectiveOperationException | RuntimeException failed) {
                        throw new Unserialisable("cannot read " + component.getName() + ": " + failed);
                    }
                    write(part, out, depth + 1, open);
                }
                out.append('}');
            } else {
                writeFields(value, out, depth, open);
            }
            open.remove(value);
        }
    }

    private static void writeFields(Object value, StringBuilder out, int depth, IdentityHashMap<Object, Boolean> open) {
        List<Field> fields = new ArrayList<>();
        for (Field field : value.getClass().getFields()) {
            if (!Modifier.isStatic(field.getModifiers())) fields.add(field);
        }
        if (fields.isEmpty()) {
            throw new Unserialisable("a " + value.getClass().getName()
                    + " is not JSON: return records, maps, lists, arrays, strings, numbers, booleans or objects with public fields");
        }
        out.append('{');
        boolean first = true;
        for (Field field : fields) {
            if (!first) out.append(',');
            first = false;
            out.append(quote(field.getName())).append(':');
            try {
                write(field.get(value), out, depth + 1, open);
            } catch (IllegalAccessException impossible) {
                throw new Unserialisable(impossible.toString());
            }
        }
        out.append('}');
    }

    static String quote(String text) {
        StringBuilder out = new StringBuilder(text.length() + 2).append('"');
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            switch (c) {
                case '"': out.append("\\\""); break;
                case '\\': out.append("\\\\"); break;
                case '\n': out.append("\\n"); break;
                case '\r': out.append("\\r"); break;
                case '\t': out.append("\\t"); break;
                default:
                    if (c < 0x20 || Character.isSurrogate(c) && !validSurrogate(text, i)) {
                        out.append(String.format("\\u%04x", c < 0x20 ? (int) c : 0xfffd));
                    } else {
                        out.append(c);
                    }
            }
        }
        return out.append('"').toString();
    }

    private static boolean validSurrogate(String text, int i) {
        char c = text.charAt(i);
        if (Character.isHighSurrogate(c)) return i + 1 < text.length() && Character.isLowSurrogate(text.charAt(i + 1));
        return i > 0 && Character.isHighSurrogate(text.charAt(i - 1));
    }
}
