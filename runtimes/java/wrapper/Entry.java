package gristmill;

import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.Parameter;
import java.lang.reflect.Type;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

/** The entry point a job names, and its arguments converted by parameter name. */
final class Entry {
    private Entry() {}

    static Method method(Class<?> type, String name, Set<String> given) throws BadArguments {
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

    static Object[] arguments(Method method, Map<String, Object> args) throws BadArguments {
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
                values[i] = FromJson.convert(args.get(name), types[i], 0);
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
}
