"""The Java example plugin (examples/java_plugin): its build and a running process of it.

``make java-plugin`` builds the jar before the suite runs (``make test``
depends on it); ``built_jar()`` builds it here too when it is missing or
older than its sources (a test run on its own), offline first so a warm
``~/.m2`` needs no network.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.plugins import REPO_ROOT, ChildProcess, child_env

JAVA_DIR = REPO_ROOT / "examples" / "java_plugin"
JAR = JAVA_DIR / "target" / "toolcall-java-plugin.jar"
JAVA, MVN = shutil.which("java"), shutil.which("mvn")
# A cold build downloads about 40 MB of Maven artifacts; a warm one takes 20-40 s.
BUILD_TIMEOUT_S = 600


def sources() -> list[Path]:
    """What the jar is built from: the pom, the Java sources and the protos."""
    return [
        JAVA_DIR / "pom.xml",
        *(JAVA_DIR / "src").rglob("*.java"),
        *(REPO_ROOT / "protos").rglob("*.proto"),
    ]


def needs_build() -> bool:
    if not JAR.exists():
        return True
    built = JAR.stat().st_mtime
    return any(p.stat().st_mtime > built for p in sources())


def built_jar() -> Path:
    """The jar, built first when stale: ``mvn -o`` (warm cache), else online."""
    if not needs_build():
        return JAR
    assert MVN is not None
    done = None
    for offline in (["-o"], []):
        done = subprocess.run(
            [MVN, "-q", "-B", *offline, "package"],
            cwd=JAVA_DIR,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        if done.returncode == 0:
            return JAR
    assert done is not None
    raise AssertionError(f"mvn package failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


class JavaPluginProcess(ChildProcess):
    """``java -jar toolcall-java-plugin.jar`` pointed at ``registry``."""

    name = "java plugin"

    def __init__(
        self, registry: str, tmp_path: Path, *, lease_ttl: str = "30", **extra_env: str
    ) -> None:
        assert JAVA is not None
        env = child_env(
            TOOLCALL_REGISTRY_ADDRESS=registry,
            TOOLCALL_PLUGIN_LEASE_TTL=lease_ttl,
            TOOLCALL_LOG_LEVEL="DEBUG",
            **extra_env,
        )
        super().__init__([JAVA, "-jar", str(JAR)], tmp_path / "java-plugin.log", env)
