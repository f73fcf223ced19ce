#!/bin/sh
# Starts a Java job: the build's wrapper.jar and app.jar (with their class-data archive) on
# the JVM chosen by jdk.sh, the heap sized from the job's memory limit so that the JVM
# answers OutOfMemoryError before the cgroup kills it for memory it was allowed to use.
. /gristmill/runtime/jdk.sh
memory=${GRISTMILL_MEMORY_BYTES:-268435456}
mib=$((memory / 1048576))
# The JVM itself (metaspace, code cache, thread stacks, the CDS mapping) takes ~40 MiB.
if [ "$mib" -le 512 ]; then heap=$((mib / 2)); else heap=$((mib - 256)); fi
[ "$heap" -ge 8 ] || heap=8
cp=/gristmill/build/wrapper.jar:/gristmill/build/app.jar
[ -n "$CLASSPATH_DEPS" ] && cp=$cp:$CLASSPATH_DEPS
cds=-Xshare:auto
if [ -f /gristmill/build/app.aot ]; then cds=-XX:AOTCache=/gristmill/build/app.aot
elif [ -f /gristmill/build/app.jsa ]; then cds=-XX:SharedArchiveFile=/gristmill/build/app.jsa; fi
# shellcheck disable=SC2086
exec "$JAVA_HOME/bin/java" $JVM_FLAGS "-Xmx${heap}m" -XX:MaxMetaspaceSize=64m \
    -XX:ReservedCodeCacheSize=32m -XX:MaxDirectMemorySize=$((heap / 2 + 1))m \
    $UNSAFE_FLAG $cds -cp "$cp" gristmill.Wrapper
