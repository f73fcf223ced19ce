package gristmill;

/** The arguments do not fit the entry point: the job ends INVALID_ARGUMENTS. */
final class BadArguments extends Exception {
    private static final long serialVersionUID = 1L;

    BadArguments(String message) {
        super(message);
    }
}
