package gristmill;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Set;

/** The envelopes written on fd 3 (runtimes/PROTOCOL.md): a result, or an error with the user's frames. */
final class Envelopes {
    private Envelopes() {}

    static String result(Object value) {
        return "{\"result\":" + ToJson.write(value) + "}";
    }

    static String invalid(String message) {
        return "{\"error\":{\"name\":\"InvalidArguments\",\"message\":" + ToJson.quote(message)
                + "},\"verdict\":\"INVALID_ARGUMENTS\"}";
    }

    /** An error of the job's own, named by `name`, without a stack. */
    static String named(String name, String message) {
        return "{\"error\":{\"name\":" + ToJson.quote(name) + ",\"message\":" + ToJson.quote(message)
                + "},\"verdict\":\"ERROR\"}";
    }

    static String error(Throwable thrown, Class<?> type, String source) {
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
            stack.append("{\"file\":").append(ToJson.quote(frame.getFileName()))
                    .append(",\"line\":").append(line)
                    .append(",\"function\":").append(ToJson.quote(simpleName(frame.getClassName()) + "." + frame.getMethodName()))
                    .append(",\"text\":").append(ToJson.quote(text)).append('}');
        }
        stack.append(']');
        String written;
        try {
            written = "{\"error\":{\"name\":" + ToJson.quote(thrown.getClass().getName()) + ",\"message\":"
                    + ToJson.quote(message.toString()) + ",\"stack\":" + stack + "},\"verdict\":\"ERROR\"}";
        } catch (Throwable e) {
            written = "{\"error\":{\"name\":" + ToJson.quote(thrown.getClass().getName()) + "},\"verdict\":\"ERROR\"}";
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
}
