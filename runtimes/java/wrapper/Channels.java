package gristmill;

import java.io.IOException;
import java.io.InputStream;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.util.Map;

/** The job's channels: its inherited descriptors and the context variables of its message. */
final class Channels {
    private Channels() {}

    /**
     * An inherited descriptor. Opening /proc/self/fd/N is no way to it: the channels are
     * pipes owned by the service, which the jail's user may not open again. java.io's
     * FileDescriptor has no public constructor taking a number, and opening java.io with
     * --add-opens would cost every start the archived module graph of CDS; sun.misc.Unsafe
     * (jdk.unsupported) sets the field instead (run.sh allows it without a warning).
     */
    static java.io.FileDescriptor descriptor(int fd) throws ReflectiveOperationException {
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
    static String withContext(String message) throws ReflectiveOperationException {
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

    static String readAll(InputStream in) throws IOException {
        try (in) {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        }
    }
}
