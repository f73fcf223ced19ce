using System.Collections.Generic;

public class Script
{
    // Arguments by parameter name, converted to these types; `b` may be left out.
    public static object Main(int a, string b = "world")
    {
        return new Dictionary<string, object> { { "greeting", "hello " + b }, { "twice", a * 2 } };
    }
}
