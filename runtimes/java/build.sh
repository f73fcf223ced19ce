#!/bin/sh
# The [build] step of a Java job, in /job: javac of the user's file (copied by the plugin to
# gristmill-src/<Class>.java, the name javac wants for a public class), packed into
# /gristmill/build/app.jar beside the wrapper's jar (compiled once per JDK by prime.sh, in
# /gristmill/shared), then a class-data archive of what a run loads (app.aot or app.jsa):
# the wrapper's, the JDK's it uses and the user's class, loaded without running it.
set -eu
. /gristmill/runtime/jdk.sh
out=/gristmill/build
classes=/tmp/classes
mkdir -p "$classes"
class=$(cat gristmill-class)
cp "/gristmill/shared/wrapper.jar" "$out/wrapper.jar"
# The wrapper's classes first: a job's class of the same name never replaces one of them.
cp=$out/wrapper.jar:$out/app.jar
[ -n "$CLASSPATH_DEPS" ] && cp=$cp:$CLASSPATH_DEPS
cd gristmill-src
# No code of the job's runs at compile time: -proc:none, as JDK 23+ does by default (JDK 17
# runs any annotation processor on the class path), and no file name becomes an option
# (-Xplugin:X.java runs a javac plugin from the class path, @X.java reads options).
for source in *.java; do
    case "$source" in -* | @*)
        echo "gristmill: $source: a Java file's name may not start with '-' or '@'" >&2
        exit 1
    esac
done
# javac's own messages (file:line: error: ...) are the COMPILE_ERROR's message.
"$JAVA_HOME/bin/javac" -J-XX:+UseSerialGC -J-XX:TieredStopAtLevel=1 -J-Xshare:auto -J-Xmx512m \
    -parameters -g -encoding UTF-8 -nowarn -Xmaxerrs 20 -implicit:class -proc:none \
    -d "$classes" ${CLASSPATH_DEPS:+-cp "$CLASSPATH_DEPS"} *.java
cd /job
"$JAVA_HOME/bin/jar" -J-XX:+UseSerialGC -J-XX:TieredStopAtLevel=1 --create --no-manifest \
    --file "$out/app.jar" -C "$classes" .
# The class-data archive of a run: JDK 25's AOT cache (classes loaded and linked, method
# handles included) where the JDK has one, else a dynamic CDS archive (JDK 17).
if [ "$JAVA_FEATURE" -ge 25 ]; then archive="-XX:AOTCacheOutput=$out/app.aot"
else archive="-XX:ArchiveClassesAtExit=$out/app.jsa"; fi
# shellcheck disable=SC2086
"$JAVA_HOME/bin/java" $JVM_FLAGS -Xmx256m "$archive" \
    $UNSAFE_FLAG -cp "$cp" gristmill.Wrapper --warmup "$class" >&2 || rm -f "$out/app.aot" "$out/app.jsa"
# A run without the archive still works; one that exists must be complete.
for file in "$out/app.aot" "$out/app.jsa"; do
    [ ! -f "$file" ] || [ -s "$file" ] || rm -f "$file"
done
