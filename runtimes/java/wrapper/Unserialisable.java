package gristmill;

/** The result cannot be written as JSON. */
final class Unserialisable extends RuntimeException {
    private static final long serialVersionUID = 1L;

    Unserialisable(String message) {
        super(message);
    }
}
