/*
 * gristmill's Java wrapper, per runtimes/PROTOCOL.md: reads the job message on fd 4
 * ({"class": ..., "entry_point": ..., "args": {...}, "source": ...}), finds the public
 * static method of that name, converts the arguments by parameter name (compiled with
 * -parameters) to the declared types, calls it and writes one envelope on fd 3. Then it
 * halts the JVM, so that threads the job left running do not hold the outcome back.
 *
 * Self-contained on purpose: no JSON library on the user's classpath to clash with theirs.
 * Everything lives in the package `gristmill`, under the class `Wrapper`.
 */
package gristmill;

import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.lang.reflect.Array;
import java.lang.reflect.Constructor;
import java.lang.reflect.Field;
import java.lang.reflect.GenericArrayType;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.Parameter;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.RecordComponent;
import java.lang.reflect.Type;
import java.lang.reflect.WildcardType;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.time.temporal.TemporalAccessor;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalDouble;
import java.util.OptionalInt;
import java.util.OptionalLong;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.Future;

public final class Wrapper {
    private Wrapper() {}

    /** The arguments do not fit the entry point: the job ends INVALID_ARGUMENTS. */
    static final class BadArguments extends Exception {
        private static final long serialVersionUID = 1L;

        BadArguments(String message) {
            super(message);
        }
    }

    /** The result cannot be written as JSON. */
    static final class Unserialisable extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Unserialisable(String message) {
            super(message);
        }
    }

    private static final int MAX_DEPTH = 500;

    public static void main(String[] argv) throws Exception {
        if (argv.length > 0 && argv[0].equals("--warmup")) {
            warmup(argv.length > 1 ? argv[1] : null);
            return;
        }
        PrintStream out = System.out;
        PrintStream err = System.err;
        String envelope;
        try {
            envelope = run(withContext(readAll(new FileInputStream(descriptor(4)))));
        } catch (Throwable failure) {
            envelope = "{\"error\":{\"name\":\"WrapperError\",\"message\":"
                    + quote(String.valueOf(failure)) + "},\"verdict\":\"ERROR\"}";
        }
        System.out.flush();
        System.err.flush();
        out.flush();
        err.flush();
        try (OutputStream channel = new FileOutputStream(descriptor(3))) {
            channel.write(envelope.getBytes(StandardCharsets.UTF_8));
        } catch (IOException ignored) {
            // No result channel: the service reports the missing envelope.
        }
        out.flush();
        err.flush();
        Runtime.getRuntime().halt(0);
    }

    /**
     * What the build's class-data-sharing training run executes: the wrapper's own paths (the
     * descriptors, JSON both ways, a reflective call with converted arguments, an error
     * report) so that the archive holds what a run loads and links, and the user's class
     * loaded without being initialized: none of the user's code runs.
     */
    private static void warmup(String className) throws Exception {
        descriptor(3);
        descriptor(4);
        withContext("GRISTMILL_WARMUP=1\0\0{}");
        @SuppressWarnings("unchecked")
        Map<String, Object> args = (Map<String, Object>) new Json(
                "{\"n\":1,\"xs\":[1,2.5,\"x\\u00e9\",true,null,{\"b\":12345678901234567890}],"
                + "\"m\":{\"k\":[1]},\"s\":\"t\",\"o\":{}}").parse();
        Method sample = entryMethod(Wrapper.class, "sample", args.keySet());
        Object result = sample.invoke(null, arguments(sample, args));
        String written = "{\"result\":" + write(result) + "}";
        written += error(new IllegalStateException("x", new RuntimeException("y")), Wrapper.class, null);
        written += invalid("x");
        if (className != null) {
            try {
                Class<?> type = Class.forName(className, false, Wrapper.class.getClassLoader());
                for (Method method : type.getDeclaredMethods()) {
                    method.getParameters();
                    method.getGenericParameterTypes();
                }
            } catch (ClassNotFoundException | LinkageError ignored) {
                // The run reports it.
            }
        }
        if (written.isEmpty()) {
            throw new IllegalStateException();
        }
    }

    /** The training run's entry point. */
    public static Object sample(int n, List<Object> xs, Map<String, List<Long>> m, String s, Object o) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("n", n);
        out.put("xs", xs);
        out.put("m", m);
        out.put("all", List.of(Optional.of(s), new int[] {1}, 2L, 1.5, BigInteger.ONE, o));
        return out;
    }

    /**
     * An inherited descriptor. Opening /proc/self/fd/N is no way to it: the channels are
     * pipes owned by the service, which the jail's user may not open again. java.io's
     * FileDescriptor has no public constructor taking a number, and opening java.io with
     * --add-opens would cost every start the archived module graph of CDS; sun.misc.Unsafe
     * (jdk.unsupported) sets the field instead (run.sh allows it without a warning).
     */
    private static java.io.FileDescriptor descriptor(int fd) throws ReflectiveOperationException {
        java.io.FileDescriptor descriptor = new java.io.FileDescriptor();
        Field field = java.io.FileDescriptor.class.getDeclaredField("fd");
        unsafe("putInt", Object.class, long.class, int.class).invoke(UNSAFE, descriptor, offset(field), fd);
        return descriptor;
    }

    private static final Object UNSAFE = theUnsafe();

    private static Object theUnsafe() {
        try {
            Field theUnsafe = Class.forName("sun.misc.Unsafe").getDeclaredField("theUnsafe");
            theUnsafe.setAccessible(true);
            return theUnsafe.get(null);
        } catch (ReflectiveOperationException failure) {
            throw new IllegalStateException(failure);
        }
    }

    /** One of Unsafe's methods, reached by reflection so that javac has no warning about it
     * to print among the user's. */
    private static Method unsafe(String name, Class<?>... parameters) throws ReflectiveOperationException {
        return UNSAFE.getClass().getMethod(name, parameters);
    }

    private static long offset(Field field) throws ReflectiveOperationException {
        return (Long) unsafe("objectFieldOffset", Field.class).invoke(UNSAFE, field);
    }

    /**
     * The job message without its head of context variables (`NAME=value`, each ended by a
     * NUL, then one more NUL), which are set in the environment the job's code sees: a warm
     * sandbox's JVM was started before its job was known. System.getenv() is a read-only
     * view, of the same map System.getenv(name) and ProcessBuilder read; its inner map is
     * reached with Unsafe (as descriptor() reaches FileDescriptor.fd, and for the same reason).
     */
    private static String withContext(String message) throws ReflectiveOperationException {
        Map<String, String> environment = null;
        int start = 0;
        while (true) {
            int end = message.indexOf('\0', start);
            if (end < 0) {
                throw new IllegalStateException("the job message has no end to its context variables");
            }
            String variable = message.substring(start, end);
            start = end + 1;
            if (variable.isEmpty()) {
                return message.substring(start);
            }
            int equals = variable.indexOf('=');
            String name = variable.substring(0, equals);
            String value = variable.substring(equals + 1);
            if (!value.equals(System.getenv(name))) {
                environment = environment != null ? environment : writableEnvironment();
                environment.put(name, value);
            }
        }
    }

    @SuppressWarnings("unchecked")
    private static Map<String, String> writableEnvironment() throws ReflectiveOperationException {
        Map<String, String> view = System.getenv();
        long inner = offset(view.getClass().getDeclaredField("m"));
        return (Map<String, String>) unsafe("getObject", Object.class, long.class).invoke(UNSAFE, view, inner);
    }

    private static String readAll(InputStream in) throws IOException {
        try (in) {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        }
    }

    // ---- the job ----

    @SuppressWarnings("unchecked")
    private static String run(String messageText) throws Exception {
        Map<String, Object> message = (Map<String, Object>) new Json(messageText).parse();
        String className = (String) message.get("class");
        String entryPoint = (String) message.get("entry_point");
        String source = (String) message.get("source");
        Map<String, Object> args = (Map<String, Object>) message.get("args");
        Class<?> type;
        try {
            type = Class.forName(className, false, Wrapper.class.getClassLoader());
        } catch (ClassNotFoundException missing) {
            return invalid("the code defines no class " + className);
        }
        Method method;
        Object[] values;
        try {
            method = entryMethod(type, entryPoint, args.keySet());
            values = arguments(method, args);
        } catch (BadArguments bad) {
            return invalid(bad.getMessage());
        }
        Object result;
        try {
            method.setAccessible(true);
            result = method.invoke(null, values);
            result = settle(result);
        } catch (InvocationTargetException thrown) {
            return error(unwrap(thrown.getCause()), type, source);
        } catch (ExceptionInInitializerError thrown) {
            return error(unwrap(thrown), type, source);
        } catch (Throwable thrown) {
            return error(thrown, type, source);
        }
        try {
            return "{\"result\":" + write(result) + "}";
        } catch (Unserialisable | StackOverflowError bad) {
            String why = bad instanceof StackOverflowError ? "the result nests too deeply" : bad.getMessage();
            return "{\"error\":{\"name\":\"UnserialisableResult\",\"message\":" + quote(why)
                    + "},\"verdict\":\"ERROR\"}";
        }
    }

    /** A returned future is awaited; what it threw is the job's error. */
    private static Object settle(Object result) throws Throwable {
        if (result instanceof Future) {
            try {
                return ((Future<?>) result).get();
            } catch (java.util.concurrent.ExecutionException failed) {
                throw new InvocationTargetException(failed.getCause());
            }
        }
        return result;
    }

    private static Throwable unwrap(Throwable thrown) {
        while (thrown instanceof ExceptionInInitializerError && thrown.getCause() != null
                || thrown instanceof InvocationTargetException && thrown.getCause() != null) {
            thrown = thrown.getCause();
        }
        return thrown;
    }

    private static String invalid(String message) {
        return "{\"error\":{\"name\":\"InvalidArguments\",\"message\":" + quote(message)
                + "},\"verdict\":\"INVALID_ARGUMENTS\"}";
    }

    private static Method entryMethod(Class<?> type, String name, Set<String> given) throws BadArguments {
        List<Method> candidates = new ArrayList<>();
        for (Method method : type.getDeclaredMethods()) {
            int modifiers = method.getModifiers();
            if (method.getName().equals(name) && Modifier.isStatic(modifiers) && Modifier.isPublic(modifiers)
                    && !method.isSynthetic() && !isClassicMain(method)) {
                candidates.add(method);
            }
        }
        if (candidates.isEmpty()) {
            throw new BadArguments("class " + type.getName() + " has no public static method " + name
                    + " (other than main(String[]))");
        }
        if (candidates.size() == 1) {
            return candidates.get(0);
        }
        for (Method method : candidates) {
            Set<String> names = new LinkedHashSet<>();
            for (Parameter parameter : method.getParameters()) {
                names.add(parameter.getName());
            }
            if (names.equals(given)) {
                return method;
            }
        }
        throw new BadArguments(candidates.size() + " overloads of " + name
                + " exist and none takes exactly the arguments " + given);
    }

    private static boolean isClassicMain(Method method) {
        return method.getParameterCount() == 1 && method.getParameterTypes()[0] == String[].class;
    }

    private static Object[] arguments(Method method, Map<String, Object> args) throws BadArguments {
        Parameter[] parameters = method.getParameters();
        Type[] types = method.getGenericParameterTypes();
        Object[] values = new Object[parameters.length];
        Set<String> unknown = new LinkedHashSet<>(args.keySet());
        for (int i = 0; i < parameters.length; i++) {
            String name = parameters[i].getName();
            unknown.remove(name);
            if (!args.containsKey(name)) {
                if (parameters[i].getType() == Optional.class) {
                    values[i] = Optional.empty();
                    continue;
                }
                throw new BadArguments("missing argument '" + name + "'");
            }
            try {
                values[i] = convert(args.get(name), types[i], 0);
            } catch (BadArguments bad) {
                throw new BadArguments("argument '" + name + "': " + bad.getMessage());
            }
        }
        if (!unknown.isEmpty()) {
            throw new BadArguments("unknown argument" + (unknown.size() > 1 ? "s " : " ")
                    + String.join(", ", unknown.stream().map(n -> "'" + n + "'").toList()));
        }
        return values;
    }

    // ---- JSON to Java ----

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
        if (depth > MAX_DEPTH) throw new BadArguments("nested too deeply");
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
            throw new BadArguments("expected one of " + names + ", got " + (json instanceof String ? quote((String) json) : kind(json)));
        }
        if (cls == UUID.class || TemporalAccessor.class.isAssignableFrom(cls)) {
            if (!(json instanceof String)) throw expected("a string", json);
            try {
                return cls == UUID.class ? UUID.fromString((String) json) : cls.getMethod("parse", CharSequence.class).invoke(null, json);
            } catch (ReflectiveOperationException | IllegalArgumentException bad) {
                Throwable why = bad instanceof InvocationTargetException ? bad.getCause() : bad;
                throw new BadArguments("cannot read " + quote((String) json) + " as " + cls.getSimpleName() + ": " + why.getMessage());
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
        if (depth > MAX_DEPTH) throw new BadArguments("nested too deeply");
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

    // ---- Java to JSON ----

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

    // ---- errors ----

    private static String error(Throwable thrown, Class<?> type, String source) {
        String file = sourceFileOf(type);
        List<String> lines = sourceLines(source);
        StringBuilder message = new StringBuilder(thrown.getMessage() == null ? "" : thrown.getMessage());
        List<StackTraceElement> frames = userFrames(thrown, file);
        Set<Throwable> seen = java.util.Collections.newSetFromMap(new IdentityHashMap<>());
        seen.add(thrown);
        for (Throwable cause = thrown.getCause(); cause != null && seen.add(cause); cause = cause.getCause()) {
            message.append("\nCaused by: ").append(cause.getClass().getName());
            if (cause.getMessage() != null) message.append(": ").append(cause.getMessage());
            if (frames.isEmpty()) frames = userFrames(cause, file);
        }
        StringBuilder stack = new StringBuilder("[");
        for (int i = frames.size() - 1; i >= 0; i--) {
            StackTraceElement frame = frames.get(i);
            int line = Math.max(frame.getLineNumber(), 0);
            String text = line > 0 && line <= lines.size() ? lines.get(line - 1).strip() : "";
            if (stack.length() > 1) stack.append(',');
            stack.append("{\"file\":").append(quote(frame.getFileName()))
                    .append(",\"line\":").append(line)
                    .append(",\"function\":").append(quote(simpleName(frame.getClassName()) + "." + frame.getMethodName()))
                    .append(",\"text\":").append(quote(text)).append('}');
        }
        stack.append(']');
        String written;
        try {
            written = "{\"error\":{\"name\":" + quote(thrown.getClass().getName()) + ",\"message\":"
                    + quote(message.toString()) + ",\"stack\":" + stack + "},\"verdict\":\"ERROR\"}";
        } catch (Throwable e) {
            written = "{\"error\":{\"name\":" + quote(thrown.getClass().getName()) + "},\"verdict\":\"ERROR\"}";
        }
        return written;
    }

    private static String simpleName(String className) {
        return className.substring(className.lastIndexOf('.') + 1);
    }

    private static String sourceFileOf(Class<?> type) {
        for (StackTraceElement frame : new Throwable().getStackTrace()) {
            if (frame.getClassName().equals(type.getName())) return frame.getFileName();
        }
        return simpleName(type.getName()).replaceAll("\\$.*", "") + ".java";
    }

    private static List<StackTraceElement> userFrames(Throwable thrown, String file) {
        List<StackTraceElement> frames = new ArrayList<>();
        for (StackTraceElement frame : thrown.getStackTrace()) {
            if (file.equals(frame.getFileName()) && !frame.getClassName().startsWith("gristmill.")) {
                frames.add(frame);
                if (frames.size() >= 100) break;
            }
        }
        return frames;
    }

    private static List<String> sourceLines(String source) {
        try {
            return source == null ? List.of() : Files.readAllLines(Paths.get(source), StandardCharsets.UTF_8);
        } catch (IOException | RuntimeException unreadable) {
            return List.of();
        }
    }

    // ---- a strict JSON reader ----

    static final class Json {
        private final String text;
        private int at;

        Json(String text) {
            this.text = text;
        }

        Object parse() {
            Object value = value(0);
            space();
            if (at != text.length()) throw fail("trailing data");
            return value;
        }

        private IllegalArgumentException fail(String why) {
            return new IllegalArgumentException("bad JSON at " + at + ": " + why);
        }

        private void space() {
            while (at < text.length() && " \t\r\n".indexOf(text.charAt(at)) >= 0) at++;
        }

        private Object value(int depth) {
            if (depth > 10_000) throw fail("nested too deeply");
            space();
            if (at >= text.length()) throw fail("unexpected end");
            char c = text.charAt(at);
            switch (c) {
                case '{': {
                    at++;
                    Map<String, Object> map = new LinkedHashMap<>();
                    space();
                    if (peek('}')) return map;
                    do {
                        space();
                        String key = string();
                        space();
                        expect(':');
                        map.put(key, value(depth + 1));
                        space();
                    } while (peek(','));
                    expect('}');
                    return map;
                }
                case '[': {
                    at++;
                    List<Object> list = new ArrayList<>();
                    space();
                    if (peek(']')) return list;
                    do {
                        list.add(value(depth + 1));
                        space();
                    } while (peek(','));
                    expect(']');
                    return list;
                }
                case '"':
                    return string();
                case 't':
                    word("true");
                    return Boolean.TRUE;
                case 'f':
                    word("false");
                    return Boolean.FALSE;
                case 'n':
                    word("null");
                    return null;
                default:
                    return number();
            }
        }

        private boolean peek(char c) {
            if (at < text.length() && text.charAt(at) == c) {
                at++;
                return true;
            }
            return false;
        }

        private void expect(char c) {
            if (!peek(c)) throw fail("expected '" + c + "'");
        }

        private void word(String w) {
            if (!text.startsWith(w, at)) throw fail("expected " + w);
            at += w.length();
        }

        private Object number() {
            int start = at;
            boolean integral = true;
            while (at < text.length()) {
                char c = text.charAt(at);
                if (c >= '0' && c <= '9' || c == '-' || c == '+') {
                    at++;
                } else if (c == '.' || c == 'e' || c == 'E') {
                    integral = false;
                    at++;
                } else {
                    break;
                }
            }
            String digits = text.substring(start, at);
            if (digits.isEmpty()) throw fail("unexpected character");
            try {
                if (integral) {
                    BigInteger big = new BigInteger(digits);
                    return big.bitLength() < 64 ? (Object) big.longValue() : big;
                }
                BigDecimal decimal = new BigDecimal(digits);
                return decimal;
            } catch (NumberFormatException bad) {
                throw fail("bad number " + digits);
            }
        }

        private String string() {
            if (!peek('"')) throw fail("expected a string");
            StringBuilder out = new StringBuilder();
            while (true) {
                if (at >= text.length()) throw fail("unterminated string");
                char c = text.charAt(at++);
                if (c == '"') return out.toString();
                if (c != '\\') {
                    out.append(c);
                    continue;
                }
                if (at >= text.length()) throw fail("unterminated escape");
                char e = text.charAt(at++);
                switch (e) {
                    case 'n': out.append('\n'); break;
                    case 't': out.append('\t'); break;
                    case 'r': out.append('\r'); break;
                    case 'b': out.append('\b'); break;
                    case 'f': out.append('\f'); break;
                    case 'u':
                        if (at + 4 > text.length()) throw fail("short \\u escape");
                        out.append((char) Integer.parseInt(text.substring(at, at + 4), 16));
                        at += 4;
                        break;
                    default: out.append(e);
                }
            }
        }
    }
}
