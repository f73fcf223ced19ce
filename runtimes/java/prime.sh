#!/bin/sh
# The trusted prime step of Java builds, run once per JDK by the service with no job's
# input: the wrapper's classes (wrapper/*.java, package gristmill) compiled into
# wrapper.jar, which every build then copies beside the job's app.jar instead of
# compiling the wrapper again. -parameters: the class-data training run calls
# Wrapper.sample by its parameters' names, as a job's entry point is called.
set -eu
. /gristmill/runtime/jdk.sh
classes=/tmp/classes
mkdir -p "$classes"
"$JAVA_HOME/bin/javac" -J-XX:+UseSerialGC -J-XX:TieredStopAtLevel=1 -J-Xshare:auto -J-Xmx512m \
    -parameters -g -encoding UTF-8 -nowarn -proc:none -d "$classes" \
    /gristmill/runtime/wrapper/*.java
"$JAVA_HOME/bin/jar" -J-XX:+UseSerialGC -J-XX:TieredStopAtLevel=1 --create --no-manifest \
    --file /gristmill/build/wrapper.jar -C "$classes" .
