#!/usr/bin/env bash
# Java's toolchain, from Debian: OpenJDK 17 (javac, jar, java) and Maven (the resolver of
# `//DEPS` lines). Idempotent: install-system.sh skips packages already installed. A newer
# JDK under /usr/lib/jvm (e.g. Temurin 25, where the machine image has one) is preferred by
# jdk.sh; it is not installable from these machines' package sources, so 17 is the floor.
# The JDK's version is part of every build's cache key (runtime.toml's version_command).
set -euo pipefail
: "${ROOT:?run by scripts/install-system.sh}"
"$ROOT/scripts/install-system.sh" apt openjdk-17-jdk-headless maven
for home in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/java-17-openjdk-amd64; do
    if [[ -x "$home/bin/javac" ]]; then
        printf '  %-8s %s\n' java "ok ($("$home/bin/java" -version 2>&1 | head -n 1), $home)"
        break
    fi
done
