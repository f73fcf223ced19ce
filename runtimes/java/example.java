// The sample job `make run` sends: greets and sums.
import java.util.*;

public class Main {
    public record Greeting(String greeting, long sum) {}

    /**
     * Greets someone and sums their numbers.
     * @param name who to greet
     * @param numbers what to add up
     */
    public static Greeting main(Optional<String> name, Optional<List<Long>> numbers) {
        String who = name.orElse("world");
        System.out.println("hello, " + who);
        long sum = numbers.orElse(List.of(1L, 2L, 3L)).stream().mapToLong(Long::longValue).sum();
        return new Greeting("hello, " + who, sum);
    }
}
