# Sourced by build.sh and run.sh (POSIX sh): chooses the JDK every step of a Java job uses.
# The newest JDK present wins: Temurin 25 where the machine has it, else Debian's OpenJDK 17
# (installed by install.sh). runtime.toml's version_command makes the same choice, so the
# version in every cache key is the version of the JDK that compiled and runs the job.
JAVA_HOME=
for home in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/java-17-openjdk-amd64; do
    if [ -x "$home/bin/javac" ]; then
        JAVA_HOME=$home
        break
    fi
done
if [ -z "$JAVA_HOME" ]; then
    echo "gristmill: no JDK under /usr/lib/jvm" >&2
    exit 70
fi

# JDK 23 and later warn on stderr when sun.misc.Unsafe's memory methods are used (the
# wrapper uses one to reach its inherited fds 3 and 4); this flag allows them quietly.
JAVA_FEATURE=$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$JAVA_HOME/release" 2>/dev/null)
JAVA_FEATURE=${JAVA_FEATURE:-17}
UNSAFE_FLAG=
[ "$JAVA_FEATURE" -lt 23 ] || UNSAFE_FLAG=--sun-misc-unsafe-memory-access=allow

# The job's dependencies (installed jars, see resolver.py) on the class path, in the
# lockfile's order; the same path at build and run time, as a CDS archive requires.
CLASSPATH_DEPS=
if [ -n "${GRISTMILL_ENVIRONMENT:-}" ] && [ -f "$GRISTMILL_ENVIRONMENT/classpath" ]; then
    CLASSPATH_DEPS=$(cat "$GRISTMILL_ENVIRONMENT/classpath")
fi

# Flags for a short job in a jail: one GC without threads of its own, C1 only (a short job
# never lives long enough for C2 to pay), one CPU's worth of threads, no perf-data file in
# /tmp, no attach listener, JVM warnings on stderr rather than the job's stdout; reflection
# through native accessors (JDK 18+ would spin method handles for the first call: slower).
JVM_FLAGS="-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:ActiveProcessorCount=1 -XX:CICompilerCount=1
 -XX:-UsePerfData -XX:+DisableAttachMechanism
 -Xlog:disable -Xlog:all=error:stderr -Xss1m
 -Djdk.reflect.useNativeAccessorOnly=true -Dfile.encoding=UTF-8 -Dsun.stdout.encoding=UTF-8 -Dsun.stderr.encoding=UTF-8
 -Dstdout.encoding=UTF-8 -Dstderr.encoding=UTF-8 -Djava.io.tmpdir=/tmp"
