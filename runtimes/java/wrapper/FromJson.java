package gristmill;

import java.lang.reflect.Array;
import java.lang.reflect.Constructor;
import java.lang.reflect.Field;
import java.lang.reflect.GenericArrayType;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Modifier;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.RecordComponent;
import java.lang.reflect.Type;
import java.lang.reflect.WildcardType;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.time.temporal.TemporalAccessor;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.UUID;

/** JSON to Java: a parsed argument as the value of its parameter's declared type. */
final class FromJson {
    private FromJson() {}

    private static String kind(Object json) {
        if (json == null) return "null";
        if (json instanceof String) return "a string";
        if (json instanceof Boolean) return "a boolean";
        if (json instanceof Number) return "a number";
        if (json instanceof List) return "an array";
        return "an object";
    }

    private static BadArguments expected(String what, Object json) {
        String shown = json instanceof Number || json instanceof Boolean ? " (" + json + ")" : "";
        return new BadArguments("expected " + what + ", got " + kind(json) + shown);
    }

    private static BigInteger integral(Object json, String what) throws BadArguments {
        if (json instanceof Long) return BigInteger.valueOf((Long) json);
        if (json instanceof BigInteger) return (BigInteger) json;
        if (json instanceof BigDecimal) {
            try {
                return ((BigDecimal) json).toBigIntegerExact();
            } catch (ArithmeticException notWhole) {
                throw expected(what, json);
            }
        }
        throw expected(what, json);
    }

    private static long ranged(Object json, String what, long min, long max) throws BadArguments {
        BigInteger value = integral(json, what);
        if (value.compareTo(BigInteger.valueOf(min)) < 0 || value.compareTo(BigInteger.valueOf(max)) > 0) {
            throw new BadArguments(value + " does not fit " + what);
        }
        return value.longValue();
    }

    private static double decimal(Object json) throws BadArguments {
        if (json instanceof Number) return ((Number) json).doubleValue();
        throw expected("a number", json);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    static Object convert(Object json, Type type, int depth) throws BadArguments {
        if (depth > ToJson.MAX_DEPTH) throw new BadArguments("nested too deeply");
        if (type instanceof WildcardType) {
            Type[] upper = ((WildcardType) type).getUpperBounds();
            return convert(json, upper.length > 0 ? upper[0] : Object.class, depth);
        }
        if (type instanceof ParameterizedType) {
            ParameterizedType generic = (ParameterizedType) type;
            Class<?> raw = (Class<?>) generic.getRawType();
            Type[] parts = generic.getActualTypeArguments();
            if (raw == Optional.class) {
                return json == null ? Optional.empty() : Optional.of(convert(json, parts[0], depth + 1));
            }
            if (json == null) return null;
            if (Map.class.isAssignableFrom(raw)) {
                if (!(json instanceof Map)) throw expected("an object", json);
                Map<Object, Object> map = new LinkedHashMap<>();
                for (Map.Entry<String, Object> entry : ((Map<String, Object>) json).entrySet()) {
                    Object key = convert(entry.getKey(), parts[0], depth + 1);
                    map.put(key, convert(entry.getValue(), parts[1], depth + 1));
                }
                return map;
            }
            if (Collection.class.isAssignableFrom(raw)) {
                if (!(json instanceof List)) throw expected("an array", json);
                Collection<Object> items = Set.class.isAssignableFrom(raw) ? new LinkedHashSet<>() : new ArrayList<>();
                for (Object item : (List<Object>) json) items.add(convert(item, parts[0], depth + 1));
                return items;
            }
            return convert(json, raw, depth);
        }
        if (type instanceof GenericArrayType) {
            if (json == null) return null;
            if (!(json instanceof List)) throw expected("an array", json);
            Type component = ((GenericArrayType) type).getGenericComponentType();
            Class<?> erased = component instanceof ParameterizedType
                    ? (Class<?>) ((ParameterizedType) component).getRawType() : Object.class;
            List<Object> list = (List<Object>) json;
            Object array = Array.newInstance(erased, list.size());
            for (int i = 0; i < list.size(); i++) Array.set(array, i, convert(list.get(i), component, depth + 1));
            return array;
        }
        if (!(type instanceof Class)) return json;
        Class<?> cls = (Class<?>) type;
        if (cls.isPrimitive()) {
            if (json == null) throw new BadArguments("expected " + cls.getName() + ", got null");
            cls = box(cls);
        }
        if (json == null) return null;
        if (cls == Object.class) return plain(json, depth);
        if (cls == String.class || cls == CharSequence.class) {
            if (json instanceof String) return json;
            throw expected("a string", json);
        }
        if (cls == Integer.class) return (int) ranged(json, "an int", Integer.MIN_VALUE, Integer.MAX_VALUE);
        if (cls == Long.class) return ranged(json, "a long", Long.MIN_VALUE, Long.MAX_VALUE);
        if (cls == Short.class) return (short) ranged(json, "a short", Short.MIN_VALUE, Short.MAX_VALUE);
        if (cls == Byte.class) return (byte) ranged(json, "a byte", Byte.MIN_VALUE, Byte.MAX_VALUE);
        if (cls == Double.class) return decimal(json);
        if (cls == Float.class) return (float) decimal(json);
        if (cls == BigInteger.class) return integral(json, "an integer");
        if (cls == BigDecimal.class || cls == Number.class) {
            if (!(json instanceof Number)) throw expected("a number", json);
            return cls == Number.class ? json : new BigDecimal(json.toString());
        }
        if (cls == Boolean.class) {
            if (json instanceof Boolean) return json;
            throw expected("a boolean", json);
        }
        if (cls == Character.class) {
            if (json instanceof String && ((String) json).length() == 1) return ((String) json).charAt(0);
            throw expected("a one-character string", json);
        }
        if (cls == byte[].class && json instanceof String) {
            try {
                return Base64.getDecoder().decode((String) json);
            } catch (IllegalArgumentException notBase64) {
                throw new BadArguments("expected base64 bytes: " + notBase64.getMessage());
            }
        }
        if (cls.isArray()) {
            if (!(json instanceof List)) throw expected("an array", json);
            List<Object> list = (List<Object>) json;
            Object array = Array.newInstance(cls.getComponentType(), list.size());
            for (int i = 0; i < list.size(); i++) {
                Array.set(array, i, convert(list.get(i), cls.getComponentType(), depth + 1));
            }
            return array;
        }
        if (cls.isEnum()) {
            if (json instanceof String) {
                for (Object constant : cls.getEnumConstants()) {
                    if (((Enum<?>) constant).name().equals(json)) return constant;
                }
            }
            List<String> names = new ArrayList<>();
            for (Object constant : cls.getEnumConstants()) names.add(((Enum<?>) constant).name());
            throw new BadArguments("expected one of " + names + ", got " + (json instanceof String ? ToJson.quote((String) json) : kind(json)));
        }
        if (cls == UUID.class || TemporalAccessor.class.isAssignableFrom(cls)) {
            if (!(json instanceof String)) throw expected("a string", json);
            try {
                return cls == UUID.class ? UUID.fromString((String) json) : cls.getMethod("parse", CharSequence.class).invoke(null, json);
            } catch (ReflectiveOperationException | IllegalArgumentException bad) {
                Throwable why = bad instanceof InvocationTargetException ? bad.getCause() : bad;
                throw new BadArguments("cannot read " + ToJson.quote((String) json) + " as " + cls.getSimpleName() + ": " + why.getMessage());
            }
        }
        if (Map.class.isAssignableFrom(cls)) {
            if (json instanceof Map) return plain(json, depth);
            throw expected("an object", json);
        }
        if (Collection.class.isAssignableFrom(cls)) {
            if (!(json instanceof List)) throw expected("an array", json);
            List<Object> items = (List<Object>) plain(json, depth);
            return Set.class.isAssignableFrom(cls) ? new LinkedHashSet<>(items) : items;
        }
        if (cls.isRecord()) return record(json, cls, depth);
        return plain(json, cls, depth);
    }

    /**
     * JSON as plain Java values, for `Object` and raw collections: objects as LinkedHashMap,
     * arrays as ArrayList, integers as Long (BigInteger past 64 bits), other numbers as Double.
     */
    @SuppressWarnings("unchecked")
    private static Object plain(Object json, int depth) throws BadArguments {
        if (depth > ToJson.MAX_DEPTH) throw new BadArguments("nested too deeply");
        if (json instanceof BigDecimal) return ((BigDecimal) json).doubleValue();
        if (json instanceof List) {
            List<Object> items = new ArrayList<>();
            for (Object item : (List<Object>) json) items.add(plain(item, depth + 1));
            return items;
        }
        if (json instanceof Map) {
            Map<String, Object> map = new LinkedHashMap<>();
            for (Map.Entry<String, Object> entry : ((Map<String, Object>) json).entrySet()) {
                map.put(entry.getKey(), plain(entry.getValue(), depth + 1));
            }
            return map;
        }
        return json;
    }

    private static Class<?> box(Class<?> primitive) {
        if (primitive == int.class) return Integer.class;
        if (primitive == long.class) return Long.class;
        if (primitive == double.class) return Double.class;
        if (primitive == float.class) return Float.class;
        if (primitive == boolean.class) return Boolean.class;
        if (primitive == short.class) return Short.class;
        if (primitive == byte.class) return Byte.class;
        return Character.class;
    }

    @SuppressWarnings("unchecked")
    private static Object record(Object json, Class<?> cls, int depth) throws BadArguments {
        if (!(json instanceof Map)) throw expected("an object (" + cls.getSimpleName() + ")", json);
        Map<String, Object> fields = (Map<String, Object>) json;
        RecordComponent[] components = cls.getRecordComponents();
        Class<?>[] types = new Class<?>[components.length];
        Object[] values = new Object[components.length];
        Set<String> unknown = new LinkedHashSet<>(fields.keySet());
        for (int i = 0; i < components.length; i++) {
            String name = components[i].getName();
            types[i] = components[i].getType();
            unknown.remove(name);
            if (!fields.containsKey(name) && types[i].isPrimitive()) {
                throw new BadArguments(cls.getSimpleName() + " needs '" + name + "'");
            }
            try {
                values[i] = convert(fields.get(name), components[i].getGenericType(), depth + 1);
            } catch (BadArguments bad) {
                throw new BadArguments(name + ": " + bad.getMessage());
            }
        }
        if (!unknown.isEmpty()) throw new BadArguments(cls.getSimpleName() + " has no field " + unknown.iterator().next());
        try {
            Constructor<?> constructor = cls.getDeclaredConstructor(types);
            constructor.setAccessible(true);
            return constructor.newInstance(values);
        } catch (InvocationTargetException refused) {
            throw new BadArguments(cls.getSimpleName() + ": " + refused.getCause());
        } catch (ReflectiveOperationException impossible) {
            throw new BadArguments("cannot make a " + cls.getSimpleName() + ": " + impossible);
        }
    }

    @SuppressWarnings("unchecked")
    private static Object plain(Object json, Class<?> cls, int depth) throws BadArguments {
        if (!(json instanceof Map)) throw expected("an object (" + cls.getSimpleName() + ")", json);
        Object instance;
        try {
            Constructor<?> constructor = cls.getDeclaredConstructor();
            constructor.setAccessible(true);
            instance = constructor.newInstance();
        } catch (ReflectiveOperationException impossible) {
            throw new BadArguments(cls.getSimpleName() + " has no constructor without parameters");
        }
        for (Map.Entry<String, Object> entry : ((Map<String, Object>) json).entrySet()) {
            Field field;
            try {
                field = cls.getField(entry.getKey());
            } catch (NoSuchFieldException missing) {
                throw new BadArguments(cls.getSimpleName() + " has no public field " + entry.getKey());
            }
            if (Modifier.isStatic(field.getModifiers()) || Modifier.isFinal(field.getModifiers())) {
                throw new BadArguments(cls.getSimpleName() + "." + entry.getKey() + " cannot be set");
            }
            try {
                field.set(instance, convert(entry.getValue(), field.getGenericType(), depth + 1));
            } catch (IllegalAccessException impossible) {
                throw new BadArguments(impossible.toString());
            } catch (BadArguments bad) {
                throw new BadArguments(entry.getKey() + ": " + bad.getMessage());
            }
        }
        return instance;
    }
}
