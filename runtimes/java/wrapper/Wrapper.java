/*
 * gristmill's Java wrapper, per runtimes/PROTOCOL.md: reads the job message on fd 4
 * ({"class": ..., "entry_point": ..., "args": {...}, "source": ...}), finds the public
 * static method of that name, converts the arguments by parameter name (compiled with
 * -parameters) to the declared types, calls it and writes one envelope on fd 3. Then it
 * halts the JVM, so that threads the job left running do not hold the outcome back.
 *
 * Self-contained on purpose: no JSON library on the user's classpath to clash with theirs.
 * Everything lives in the package `gristmill`, compiled once per JDK by the build's prime
 * step (prime.sh) into wrapper.jar, beside each job's own app.jar.
 */
package gristmill;

import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.Future;

public final class Wrapper {
    private Wrapper() {}

    public static void main(String[] argv) throws Exception {
        if (argv.length > 0 && argv[0].equals("--warmup")) {
            warmup(argv.length > 1 ? argv[1] : null);
            return;
        }
        PrintStream out = System.out;
        PrintStream err = System.err;
        String envelope;
        try {
            envelope = run(Channels.withContext(Channels.readAll(new FileInputStream(Channels.descriptor(4)))));
        } catch (Throwable failure) {
            envelope = Envelopes.named("WrapperError", String.valueOf(failure));
        }
        System.out.flush();
        System.err.flush();
        out.flush();
        err.flush();
        try (OutputStream channel = new FileOutputStream(Channels.descriptor(3))) {
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
        Channels.descriptor(3);
        Channels.descriptor(4);
        Channels.withContext("GRISTMILL_WARMUP=1\0\0{}");
        @SuppressWarnings("unchecked")
        Map<String, Object> args = (Map<String, Object>) new Json(
                "{\"n\":1,\"xs\":[1,2.5,\"x\\u00e9\",true,null,{\"b\":12345678901234567890}],"
                + "\"m\":{\"k\":[1]},\"s\":\"t\",\"o\":{}}").parse();
        Method sample = Entry.method(Wrapper.class, "sample", args.keySet());
        Object result = sample.invoke(null, Entry.arguments(sample, args));
        String written = Envelopes.result(result);
        written += Envelopes.error(new IllegalStateException("x", new RuntimeException("y")), Wrapper.class, null);
        written += Envelopes.invalid("x");
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
            return Envelopes.invalid("the code defines no class " + className);
        }
        Method method;
        Object[] values;
        try {
            method = Entry.method(type, entryPoint, args.keySet());
            values = Entry.arguments(method, args);
        } catch (BadArguments bad) {
            return Envelopes.invalid(bad.getMessage());
        }
        Object result;
        try {
            method.setAccessible(true);
            result = method.invoke(null, values);
            result = settle(result);
        } catch (InvocationTargetException thrown) {
            return Envelopes.error(unwrap(thrown.getCause()), type, source);
        } catch (ExceptionInInitializerError thrown) {
            return Envelopes.error(unwrap(thrown), type, source);
        } catch (Throwable thrown) {
            return Envelopes.error(thrown, type, source);
        }
        try {
            return Envelopes.result(result);
        } catch (Unserialisable | StackOverflowError bad) {
            String why = bad instanceof StackOverflowError ? "the result nests too deeply" : bad.getMessage();
            return Envelopes.named("UnserialisableResult", why);
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
}
