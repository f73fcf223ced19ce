// gristmill's C# wrapper, per runtimes/PROTOCOL.md. It is compiled into the job's
// assembly beside the user's main.cs (`mcs -main:Gristmill.Wrapper`), so it finds the
// entry point by reflection: a public static method of a public class, named as the job
// says (`Main` by default), whose parameters are not `string[]`. It reads the job message
// (JSON) on fd 4, converts each argument by parameter name to the declared type, calls the
// method, writes the result (or the error) as JSON on fd 3, and ends the process at once,
// so that threads the job left running do not hold the outcome back.
// C# 7.2 at most, the mscorlib/System/System.Core/System.Numerics of Mono only.
using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Numerics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading.Tasks;

namespace Gristmill
{
    internal sealed class ArgumentError : Exception
    {
        public ArgumentError(string message) : base(message) { }
    }

    internal sealed class ResultError : Exception
    {
        public ResultError(string message) : base(message) { }
    }

    // Integers past 64 bits, as System.Numerics.BigInteger. Kept apart, and recognised by
    // type name elsewhere, so that System.Numerics is loaded only by jobs that use it
    // (each assembly loaded costs every job's start a few milliseconds).
    internal static class Big
    {
        public const string Name = "System.Numerics.BigInteger";

        public static bool Is(object value) { return value != null && value.GetType().FullName == Name; }

        public static object Parse(string token) { return BigInteger.Parse(token, CultureInfo.InvariantCulture); }

        public static object FromLong(long value) { return new BigInteger(value); }

        public static object ToDecimal(object value) { return (decimal)(BigInteger)value; }

        public static double ToDouble(object value) { return (double)(BigInteger)value; }
    }

    // --- JSON: parsed into Dictionary<string, object>, List<object>, string, long,
    // BigInteger, double, bool and null; written from any .NET value. --------------------
    internal sealed class JsonReader
    {
        private readonly string text;
        private int at;

        private JsonReader(string text) { this.text = text; }

        public static object Parse(string text)
        {
            var reader = new JsonReader(text);
            var value = reader.Value(0);
            reader.Space();
            if (reader.at != text.Length) throw new FormatException("trailing data in the job message");
            return value;
        }

        private void Space()
        {
            while (at < text.Length && (text[at] == ' ' || text[at] == '\t' || text[at] == '\n' || text[at] == '\r')) at++;
        }

        private object Value(int depth)
        {
            if (depth > 512) throw new FormatException("the job message is nested too deeply");
            Space();
            if (at >= text.Length) throw new FormatException("unexpected end of the job message");
            char c = text[at];
            if (c == '{')
            {
                at++;
                var map = new Dictionary<string, object>();
                Space();
                if (text[at] == '}') { at++; return map; }
                while (true)
                {
                    Space();
                    var key = String();
                    Space();
                    Expect(':');
                    map[key] = Value(depth + 1);
                    Space();
                    if (text[at] == ',') { at++; continue; }
                    Expect('}');
                    return map;
                }
            }
            if (c == '[')
            {
                at++;
                var list = new List<object>();
                Space();
                if (text[at] == ']') { at++; return list; }
                while (true)
                {
                    list.Add(Value(depth + 1));
                    Space();
                    if (text[at] == ',') { at++; continue; }
                    Expect(']');
                    return list;
                }
            }
            if (c == '"') return String();
            if (Word("true")) return true;
            if (Word("false")) return false;
            if (Word("null")) return null;
            return Number();
        }

        private bool Word(string word)
        {
            if (string.CompareOrdinal(text, at, word, 0, word.Length) != 0) return false;
            at += word.Length;
            return true;
        }

        private void Expect(char c)
        {
            if (at >= text.Length || text[at] != c) throw new FormatException("expected '" + c + "' in the job message");
            at++;
        }

        private string String()
        {
            Expect('"');
            var builder = new StringBuilder();
            while (true)
            {
                char c = text[at++];
                if (c == '"') return builder.ToString();
                if (c != '\\') { builder.Append(c); continue; }
                char e = text[at++];
                switch (e)
                {
                    case 'n': builder.Append('\n'); break;
                    case 't': builder.Append('\t'); break;
                    case 'r': builder.Append('\r'); break;
                    case 'b': builder.Append('\b'); break;
                    case 'f': builder.Append('\f'); break;
                    case 'u':
                        builder.Append((char)int.Parse(text.Substring(at, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                        at += 4;
                        break;
                    default: builder.Append(e); break;
                }
            }
        }

        private object Number()
        {
            int start = at;
            bool integral = true;
            while (at < text.Length && "+-0123456789.eE".IndexOf(text[at]) >= 0)
            {
                if (".eE".IndexOf(text[at]) >= 0) integral = false;
                at++;
            }
            var token = text.Substring(start, at - start);
            if (token.Length == 0) throw new FormatException("unexpected character in the job message");
            if (integral)
            {
                long small;
                if (long.TryParse(token, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out small)) return small;
                return Big.Parse(token);
            }
            return double.Parse(token, NumberStyles.Float, CultureInfo.InvariantCulture);
        }
    }

    internal static class JsonWriter
    {
        public static string Write(object value)
        {
            var builder = new StringBuilder();
            Value(builder, value, 0);
            return builder.ToString();
        }

        private static void Value(StringBuilder o, object value, int depth)
        {
            if (depth > 200) throw new ResultError("it is nested more than 200 levels deep (a cycle?)");
            if (value == null) { o.Append("null"); return; }
            var type = value.GetType();
            if (value is string) { Text(o, (string)value); return; }
            if (value is char || value is Guid || value is TimeSpan || type.FullName == "System.Uri") { Text(o, Convert.ToString(value, CultureInfo.InvariantCulture)); return; }
            if (value is bool) { o.Append((bool)value ? "true" : "false"); return; }
            if (type.IsEnum) { Text(o, value.ToString()); return; }
            if (value is DateTime) { Text(o, ((DateTime)value).ToString("o", CultureInfo.InvariantCulture)); return; }
            if (value is DateTimeOffset) { Text(o, ((DateTimeOffset)value).ToString("o", CultureInfo.InvariantCulture)); return; }
            if (value is int || value is long || value is short || value is sbyte || value is byte
                || value is uint || value is ulong || value is ushort || Big.Is(value))
            {
                o.Append(Convert.ToString(value, CultureInfo.InvariantCulture));
                return;
            }
            if (value is decimal) { o.Append(((decimal)value).ToString(CultureInfo.InvariantCulture)); return; }
            if (value is double || value is float)
            {
                double d = Convert.ToDouble(value, CultureInfo.InvariantCulture);
                if (double.IsNaN(d) || double.IsInfinity(d)) throw new ResultError(d + " is not a JSON number");
                var s = value is float ? ((float)value).ToString("R", CultureInfo.InvariantCulture) : d.ToString("R", CultureInfo.InvariantCulture);
                if (s.IndexOfAny(new[] { '.', 'E', 'e' }) < 0) s += ".0";
                o.Append(s);
                return;
            }
            if (value is byte[]) { Text(o, Convert.ToBase64String((byte[])value)); return; }
            var dictionary = value as IDictionary;
            if (dictionary != null)
            {
                o.Append('{');
                bool first = true;
                foreach (DictionaryEntry entry in dictionary)
                {
                    if (!first) o.Append(',');
                    first = false;
                    Text(o, Convert.ToString(entry.Key, CultureInfo.InvariantCulture));
                    o.Append(':');
                    Value(o, entry.Value, depth + 1);
                }
                o.Append('}');
                return;
            }
            if (type.FullName != null && type.FullName.StartsWith("System.ValueTuple`", StringComparison.Ordinal)
                || type.FullName != null && type.FullName.StartsWith("System.Tuple`", StringComparison.Ordinal))
            {
                var items = new List<object>();
                foreach (var field in type.GetFields()) items.Add(field.GetValue(value));
                foreach (var property in type.GetProperties()) if (property.Name.StartsWith("Item", StringComparison.Ordinal) || property.Name == "Rest") items.Add(property.GetValue(value, null));
                Value(o, items, depth + 1);
                return;
            }
            var sequence = value as IEnumerable;
            if (sequence != null)
            {
                o.Append('[');
                bool first = true;
                foreach (var item in sequence)
                {
                    if (!first) o.Append(',');
                    first = false;
                    Value(o, item, depth + 1);
                }
                o.Append(']');
                return;
            }
            if (value is Delegate || value is Type || value is Task || value is IntPtr || value is MemberInfo || value is Stream)
                throw new ResultError("a " + type.Name + " has no JSON form");
            // A plain object: its public fields and readable properties.
            o.Append('{');
            bool firstMember = true;
            foreach (var field in type.GetFields(BindingFlags.Public | BindingFlags.Instance))
            {
                if (!firstMember) o.Append(',');
                firstMember = false;
                Text(o, field.Name);
                o.Append(':');
                Value(o, field.GetValue(value), depth + 1);
            }
            foreach (var property in type.GetProperties(BindingFlags.Public | BindingFlags.Instance))
            {
                if (!property.CanRead || property.GetIndexParameters().Length > 0) continue;
                if (!firstMember) o.Append(',');
                firstMember = false;
                Text(o, property.Name);
                o.Append(':');
                Value(o, property.GetValue(value, null), depth + 1);
            }
            o.Append('}');
        }

        public static void Text(StringBuilder o, string s)
        {
            o.Append('"');
            foreach (char c in s)
            {
                switch (c)
                {
                    case '"': o.Append("\\\""); break;
                    case '\\': o.Append("\\\\"); break;
                    case '\n': o.Append("\\n"); break;
                    case '\r': o.Append("\\r"); break;
                    case '\t': o.Append("\\t"); break;
                    default:
                        if (c < 0x20) o.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                        else o.Append(c);
                        break;
                }
            }
            o.Append('"');
        }
    }

    // --- Arguments: JSON values to the declared parameter types. ---------------------------
    internal static class Arguments
    {
        private static string Describe(object value)
        {
            if (value == null) return "null";
            if (value is string) return "a string";
            if (value is bool) return "a boolean";
            if (value is long || Big.Is(value)) return "an integer";
            if (value is double) return "a number";
            if (value is List<object>) return "an array";
            return "an object";
        }

        private static string TypeName(Type type)
        {
            if (!type.IsGenericType) return type.Name;
            var name = type.Name.Substring(0, type.Name.IndexOf('`'));
            var arguments = new List<string>();
            foreach (var argument in type.GetGenericArguments()) arguments.Add(TypeName(argument));
            return name + "<" + string.Join(", ", arguments) + ">";
        }

        private static ArgumentError Mismatch(string where, Type type, object value)
        {
            return new ArgumentError(where + ": expected " + TypeName(type) + ", got " + Describe(value));
        }

        public static object Convert(object value, Type type, string where)
        {
            var underlying = Nullable.GetUnderlyingType(type);
            if (value == null)
            {
                if (underlying != null || !type.IsValueType) return null;
                throw Mismatch(where, type, value);
            }
            if (underlying != null) return Convert(value, underlying, where);
            if (type == typeof(object)) return Natural(value);
            if (type == typeof(string))
            {
                if (value is string) return value;
                throw Mismatch(where, type, value);
            }
            if (type == typeof(bool))
            {
                if (value is bool) return value;
                throw Mismatch(where, type, value);
            }
            if (type.IsEnum)
            {
                var name = value as string;
                if (name != null)
                {
                    foreach (var member in Enum.GetNames(type))
                        if (string.Equals(member, name, StringComparison.OrdinalIgnoreCase)) return Enum.Parse(type, member);
                    throw new ArgumentError(where + ": " + Text(name) + " is not one of " + string.Join(", ", Enum.GetNames(type)));
                }
                if (value is long && Enum.IsDefined(type, System.Convert.ChangeType(value, Enum.GetUnderlyingType(type), CultureInfo.InvariantCulture)))
                    return Enum.ToObject(type, value);
                throw Mismatch(where, type, value);
            }
            if (type == typeof(int) || type == typeof(long) || type == typeof(short) || type == typeof(byte)
                || type == typeof(sbyte) || type == typeof(uint) || type == typeof(ulong) || type == typeof(ushort))
            {
                if (value is long || Big.Is(value))
                {
                    try { return System.Convert.ChangeType(value is long ? value : Big.ToDecimal(value), type, CultureInfo.InvariantCulture); }
                    catch (Exception) { throw new ArgumentError(where + ": " + value + " does not fit " + TypeName(type)); }
                }
                throw Mismatch(where, type, value);
            }
            if (type.FullName == Big.Name)
            {
                if (value is long) return Big.FromLong((long)value);
                if (Big.Is(value)) return value;
                throw Mismatch(where, type, value);
            }
            if (type == typeof(double) || type == typeof(float) || type == typeof(decimal))
            {
                if (value is long || value is double || Big.Is(value))
                {
                    if (type == typeof(decimal)) return System.Convert.ToDecimal(Big.Is(value) ? Big.ToDouble(value) : value, CultureInfo.InvariantCulture);
                    double d = Big.Is(value) ? Big.ToDouble(value) : System.Convert.ToDouble(value, CultureInfo.InvariantCulture);
                    return type == typeof(float) ? (object)(float)d : d;
                }
                throw Mismatch(where, type, value);
            }
            if (type == typeof(char))
            {
                var s = value as string;
                if (s != null && s.Length == 1) return s[0];
                throw Mismatch(where, type, value);
            }
            if (type == typeof(DateTime) || type == typeof(DateTimeOffset) || type == typeof(Guid) || type == typeof(TimeSpan))
            {
                var s = value as string;
                if (s == null) throw Mismatch(where, type, value);
                try
                {
                    if (type == typeof(DateTime)) return DateTime.Parse(s, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind);
                    if (type == typeof(DateTimeOffset)) return DateTimeOffset.Parse(s, CultureInfo.InvariantCulture);
                    if (type == typeof(Guid)) return Guid.Parse(s);
                    return TimeSpan.Parse(s, CultureInfo.InvariantCulture);
                }
                catch (FormatException) { throw new ArgumentError(where + ": " + Text(s) + " is not a " + type.Name); }
            }
            if (type == typeof(byte[]) && value is string)
            {
                try { return System.Convert.FromBase64String((string)value); }
                catch (FormatException) { throw new ArgumentError(where + ": not base64"); }
            }
            if (type.IsArray)
            {
                var list = value as List<object>;
                if (list == null) throw Mismatch(where, type, value);
                var element = type.GetElementType();
                var array = Array.CreateInstance(element, list.Count);
                for (int i = 0; i < list.Count; i++) array.SetValue(Convert(list[i], element, where + "[" + i + "]"), i);
                return array;
            }
            if (type.IsGenericType)
            {
                var definition = type.GetGenericTypeDefinition();
                var parameters = type.GetGenericArguments();
                if (definition == typeof(List<>) || definition == typeof(IList<>) || definition == typeof(IEnumerable<>)
                    || definition == typeof(ICollection<>) || definition == typeof(IReadOnlyList<>) || definition == typeof(IReadOnlyCollection<>))
                {
                    var list = value as List<object>;
                    if (list == null) throw Mismatch(where, type, value);
                    var result = (IList)Activator.CreateInstance(typeof(List<>).MakeGenericType(parameters[0]));
                    for (int i = 0; i < list.Count; i++) result.Add(Convert(list[i], parameters[0], where + "[" + i + "]"));
                    return result;
                }
                if (definition == typeof(Dictionary<,>) || definition == typeof(IDictionary<,>) || definition == typeof(IReadOnlyDictionary<,>))
                {
                    var map = value as Dictionary<string, object>;
                    if (map == null || parameters[0] != typeof(string)) throw Mismatch(where, type, value);
                    var result = (IDictionary)Activator.CreateInstance(typeof(Dictionary<,>).MakeGenericType(parameters));
                    foreach (var entry in map) result[entry.Key] = Convert(entry.Value, parameters[1], where + "." + entry.Key);
                    return result;
                }
            }
            if (type == typeof(IDictionary) || type == typeof(Hashtable))
            {
                var map = value as Dictionary<string, object>;
                if (map == null) throw Mismatch(where, type, value);
                return Natural(map);
            }
            if (type == typeof(IList) || type == typeof(IEnumerable) || type == typeof(ArrayList))
            {
                var list = value as List<object>;
                if (list == null) throw Mismatch(where, type, value);
                return Natural(list);
            }
            if ((type.IsClass || type.IsValueType) && !type.IsAbstract && !type.IsPrimitive)
            {
                var map = value as Dictionary<string, object>;
                if (map == null) throw Mismatch(where, type, value);
                return Populate(map, type, where);
            }
            throw new ArgumentError(where + ": parameters of type " + TypeName(type) + " are not supported");
        }

        private static object Populate(Dictionary<string, object> map, Type type, string where)
        {
            if (!type.IsValueType && type.GetConstructor(Type.EmptyTypes) == null)
                throw new ArgumentError(where + ": " + TypeName(type) + " has no public parameterless constructor");
            var instance = Activator.CreateInstance(type);
            foreach (var entry in map)
            {
                const BindingFlags flags = BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase;
                var field = type.GetField(entry.Key, flags);
                var property = field == null ? type.GetProperty(entry.Key, flags) : null;
                var inner = where + "." + entry.Key;
                if (field != null && !field.IsInitOnly) field.SetValue(instance, Convert(entry.Value, field.FieldType, inner));
                else if (property != null && property.CanWrite && property.GetSetMethod() != null)
                    property.SetValue(instance, Convert(entry.Value, property.PropertyType, inner), null);
                else throw new ArgumentError(inner + ": " + TypeName(type) + " has no public settable member " + Text(entry.Key));
            }
            return instance;
        }

        // What a parameter typed `object` gets: the JSON value as it was read
        // (Dictionary<string, object>, List<object>, string, long, BigInteger, double, bool).
        private static object Natural(object value) { return value; }

        private static string Text(string s)
        {
            var builder = new StringBuilder();
            JsonWriter.Text(builder, s);
            return builder.ToString();
        }

        public static object[] Bind(MethodInfo method, Dictionary<string, object> args)
        {
            var parameters = method.GetParameters();
            var known = new List<string>();
            foreach (var parameter in parameters) known.Add(parameter.Name);
            var unknown = new List<string>();
            foreach (var name in args.Keys) if (known.IndexOf(name) < 0) unknown.Add(name);
            if (unknown.Count > 0)
                throw new ArgumentError("unknown argument" + (unknown.Count > 1 ? "s " : " ") + string.Join(", ", unknown)
                    + " (" + method.Name + " takes " + (parameters.Length == 0 ? "none" : string.Join(", ", known)) + ")");
            var values = new object[parameters.Length];
            var missing = new List<string>();
            for (int i = 0; i < parameters.Length; i++)
            {
                var parameter = parameters[i];
                object value;
                if (args.TryGetValue(parameter.Name, out value)) values[i] = Convert(value, parameter.ParameterType, parameter.Name);
                else if (parameter.IsOptional) values[i] = parameter.DefaultValue is DBNull || parameter.DefaultValue is Missing
                    ? (parameter.ParameterType.IsValueType ? Activator.CreateInstance(parameter.ParameterType) : null)
                    : parameter.DefaultValue;
                else missing.Add(parameter.Name);
            }
            if (missing.Count > 0) throw new ArgumentError("missing argument" + (missing.Count > 1 ? "s " : " ") + string.Join(", ", missing));
            return values;
        }
    }

    public static class Wrapper
    {
        private const string JobDir = "/job/";

        [DllImport("libc", EntryPoint = "_exit")]
        private static extern void Exit(int status);

        // The job message and the result channel are bare descriptors, which Mono's
        // FileStream refuses (and /proc/self/fd/N is not the jail user's to reopen):
        // libc's read and write, then.
        [DllImport("libc", EntryPoint = "read", SetLastError = true)]
        private static extern IntPtr ReadFd(int fd, byte[] buffer, IntPtr count);

        [DllImport("libc", EntryPoint = "write", SetLastError = true)]
        private static extern IntPtr WriteFd(int fd, byte[] buffer, IntPtr count);

        private const int EINTR = 4;
        private const int SIGXFSZ = 25;
        private static readonly IntPtr SIG_IGN = (IntPtr)1;

        [DllImport("libc", EntryPoint = "signal")]
        private static extern IntPtr Signal(int signal, IntPtr handler);

        // The job's context variables head the job message (NAME=value, each ended by a NUL
        // byte, then a lone NUL): set in the environment before the job's code runs, since a
        // warm sandbox's program was started before its job was known. The message follows.
        private static byte[] TakeContext(byte[] data)
        {
            int start = 0;
            for (int end = Array.IndexOf(data, (byte)0); end > start; end = Array.IndexOf(data, (byte)0, start))
            {
                var variable = Encoding.UTF8.GetString(data, start, end - start);
                int equals = variable.IndexOf('=');
                Environment.SetEnvironmentVariable(variable.Substring(0, equals), variable.Substring(equals + 1));
                start = end + 1;
            }
            int from = Math.Min(start + 1, data.Length);
            var message = new byte[data.Length - from];
            Array.Copy(data, from, message, 0, message.Length);
            return message;
        }

        private static byte[] ReadAll(int fd)
        {
            var data = new MemoryStream();
            var buffer = new byte[65536];
            while (true)
            {
                long got = (long)ReadFd(fd, buffer, (IntPtr)buffer.Length);
                if (got < 0 && Marshal.GetLastWin32Error() == EINTR) continue;
                if (got <= 0) return data.ToArray();
                data.Write(buffer, 0, (int)got);
            }
        }

        private static void WriteAll(int fd, byte[] bytes)
        {
            int done = 0;
            var buffer = new byte[65536];
            while (done < bytes.Length)
            {
                int chunk = Math.Min(buffer.Length, bytes.Length - done);
                Buffer.BlockCopy(bytes, done, buffer, 0, chunk);
                long wrote = (long)WriteFd(fd, buffer, (IntPtr)chunk);
                if (wrote < 0 && Marshal.GetLastWin32Error() == EINTR) continue;
                if (wrote <= 0) return;
                done += (int)wrote;
            }
        }

        // The job's NuGet assemblies, from its environment (GRISTMILL_ENVIRONMENT/lib),
        // found when the runtime first needs them.
        private static Assembly Resolve(object sender, ResolveEventArgs request)
        {
            var environment = Environment.GetEnvironmentVariable("GRISTMILL_ENVIRONMENT");
            if (string.IsNullOrEmpty(environment)) return null;
            var path = Path.Combine(Path.Combine(environment, "lib"), new AssemblyName(request.Name).Name + ".dll");
            return File.Exists(path) ? Assembly.LoadFrom(path) : null;
        }

        private static Dictionary<string, object> Error(string name, string message, List<object> stack, string verdict)
        {
            var error = new Dictionary<string, object>();
            error["name"] = name;
            error["message"] = message;
            error["stack"] = stack ?? new List<object>();
            var envelope = new Dictionary<string, object>();
            envelope["error"] = error;
            envelope["verdict"] = verdict;
            return envelope;
        }

        // The user's frames of `error`, innermost last: those in files under /job.
        private static List<object> Frames(Exception error)
        {
            // An exception raised outside the user's code (a TypeInitializationException,
            // say) takes the frames of the first inner exception that has some.
            for (var e = error; e != null; e = e.InnerException)
            {
                var frames = UserFrames(e);
                if (frames.Count > 0) return frames;
            }
            return new List<object>();
        }

        private static List<object> UserFrames(Exception error)
        {
            var frames = new List<object>();
            var trace = new System.Diagnostics.StackTrace(error, true);
            var list = trace.GetFrames();
            if (list == null) return frames;
            for (int i = list.Length - 1; i >= 0; i--)
            {
                var frame = list[i];
                var file = frame.GetFileName();
                if (file == null || !file.StartsWith(JobDir, StringComparison.Ordinal)) continue;
                var entry = new Dictionary<string, object>();
                entry["file"] = file.Substring(JobDir.Length);
                entry["line"] = (long)frame.GetFileLineNumber();
                var method = frame.GetMethod();
                entry["function"] = method == null ? "" : (method.DeclaringType == null ? "" : method.DeclaringType.Name + ".") + method.Name;
                entry["text"] = SourceLine(file, frame.GetFileLineNumber());
                frames.Add(entry);
            }
            return frames;
        }

        private static readonly Dictionary<string, string[]> Sources = new Dictionary<string, string[]>();

        private static string SourceLine(string file, int line)
        {
            try
            {
                string[] lines;
                if (!Sources.TryGetValue(file, out lines)) Sources[file] = lines = File.ReadAllLines(file);
                return line >= 1 && line <= lines.Length ? lines[line - 1].Trim() : "";
            }
            catch (Exception) { return ""; }
        }

        // The message with each inner exception's type and message after it.
        private static string Message(Exception error)
        {
            var message = error.Message;
            for (var inner = error.InnerException; inner != null; inner = inner.InnerException)
                message += " ---> " + inner.GetType().Name + ": " + inner.Message;
            return message;
        }

        private static List<MethodInfo> Candidates(string name)
        {
            var found = new List<MethodInfo>();
            foreach (var type in typeof(Wrapper).Assembly.GetTypes())
            {
                if (type == typeof(Wrapper) || !(type.IsPublic || type.IsNestedPublic)) continue;
                foreach (var method in type.GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.DeclaredOnly))
                {
                    if (method.Name != name || method.IsGenericMethodDefinition) continue;
                    var parameters = method.GetParameters();
                    if (parameters.Length == 1 && parameters[0].ParameterType == typeof(string[])) continue;
                    found.Add(method);
                }
            }
            return found;
        }

        private static Dictionary<string, object> Run(Dictionary<string, object> job)
        {
            var entry = (string)job["entry_point"];
            var candidates = Candidates(entry);
            if (candidates.Count == 0)
                return Error("EntryPointNotFound", "the code defines no public static method " + entry
                    + " in a public class (whose parameters are not string[])", null, "ERROR");
            if (candidates.Count > 1)
                return Error("EntryPointAmbiguous", "the code defines " + candidates.Count + " public static methods named " + entry, null, "ERROR");
            var method = candidates[0];
            object[] values;
            try { values = Arguments.Bind(method, (Dictionary<string, object>)job["args"]); }
            catch (ArgumentError error) { return Error("InvalidArguments", error.Message, null, "INVALID_ARGUMENTS"); }
            object result;
            try
            {
                result = method.Invoke(null, values);
                var task = result as Task;
                if (task != null)
                {
                    task.Wait();
                    var property = task.GetType().GetProperty("Result");
                    result = property != null && task.GetType().IsGenericType && property.PropertyType.Name != "VoidTaskResult" ? property.GetValue(task, null) : null;
                }
            }
            // Reported here, not rethrown: a rethrow would replace the user's stack.
            catch (TargetInvocationException invoked) { return Failure(Unwrap(invoked)); }
            catch (AggregateException aggregate) { return Failure(Unwrap(aggregate)); }
            var envelope = new Dictionary<string, object>();
            try { JsonWriter.Write(result); }
            catch (ResultError error)
            {
                return Error("ResultNotSerializable", method.Name + " returned a " + (result == null ? "null" : result.GetType().Name)
                    + ", which is not JSON-serialisable: " + error.Message, null, "ERROR");
            }
            envelope["result"] = result;
            return envelope;
        }

        // The exit status: 1 once the job's code has thrown.
        private static int status;

        private static Dictionary<string, object> Failure(Exception error)
        {
            Console.Error.WriteLine(error.ToString());
            status = 1;
            return Error(error.GetType().Name, Message(error), Frames(error), "ERROR");
        }

        private static Exception Unwrap(Exception error)
        {
            while (true)
            {
                var invoked = error as TargetInvocationException;
                if (invoked != null && invoked.InnerException != null) { error = invoked.InnerException; continue; }
                var aggregate = error as AggregateException;
                if (aggregate != null && aggregate.InnerExceptions.Count == 1) { error = aggregate.InnerExceptions[0]; continue; }
                return error;
            }
        }

        // What every job runs, compiled by the JIT before the job message is read: a warm
        // sandbox waits on that read, so its job finds the JSON reader and writer and the
        // reflection over the assembly's types ready (a cold one compiles them either way).
        private static void Prepare()
        {
            var args = (Dictionary<string, object>)JsonReader.Parse(
                "{\"n\":1,\"x\":-2.5e3,\"s\":\"x\\u00e9\",\"b\":true,\"xs\":[1,2],\"o\":{\"k\":[null,12345678901234567890]}}");
            var sample = typeof(Wrapper).GetMethod("Sample", BindingFlags.NonPublic | BindingFlags.Static);
            JsonWriter.Write(sample.Invoke(null, Arguments.Bind(sample, args)));
            Candidates("");
        }

        private static object Sample(int n, double x, string s, bool b, long[] xs, object o)
        {
            return new object[] { n, x, s, b, xs, o };
        }

        public static void Main()
        {
            var utf8 = new UTF8Encoding(false);
            var stdout = new StreamWriter(Console.OpenStandardOutput(), utf8);
            stdout.AutoFlush = true;
            Console.SetOut(stdout);
            var stderr = new StreamWriter(Console.OpenStandardError(), utf8);
            stderr.AutoFlush = true;
            Console.SetError(stderr);
            CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
            System.Threading.Thread.CurrentThread.CurrentCulture = CultureInfo.InvariantCulture;

            AppDomain.CurrentDomain.AssemblyResolve += Resolve;
            // A write past the file size limit fails with EFBIG (an IOException) rather
            // than killing the job, as in the other languages.
            Signal(SIGXFSZ, SIG_IGN);
            Prepare();
            var job = (Dictionary<string, object>)JsonReader.Parse(utf8.GetString(TakeContext(ReadAll(4))));
            Dictionary<string, object> message;
            try { message = Run(job); }
            catch (Exception raised) { message = Failure(Unwrap(raised)); }
            WriteAll(3, utf8.GetBytes(JsonWriter.Write(message)));
            Console.Out.Flush();
            Console.Error.Flush();
            // At once: threads the job left running must not hold the outcome back.
            Exit(status);
        }
    }
}
