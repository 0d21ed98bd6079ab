"""e2e/retry.sh: a refused fetch is tried again with backoff, then reported with what and the remedy."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RETRY = ROOT / "e2e" / "retry.sh"


def _run(tmp_path: Path, fail_times: int, tries: int) -> subprocess.CompletedProcess[str]:
    # A fetch that is refused `fail_times` times (as the Go proxy's passing 403 was), then succeeds.
    counter = tmp_path / "count"
    script = f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; [ "$n" -ge {fail_times} ]'
    env = {**os.environ, "GREENJOBS_RETRIES": str(tries), "GREENJOBS_RETRY_DELAY": "0"}
    return subprocess.run(
        [str(RETRY), "--what", "sigs.k8s.io/jobset@v0.12.0", "--remedy", "go", "--", "bash", "-c", script],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_passing_refusal_is_retried_until_it_succeeds(tmp_path: Path) -> None:
    result = _run(tmp_path, fail_times=2, tries=5)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "count").read_text().strip() == "3"
    assert result.stderr.count("[retry] sigs.k8s.io/jobset@v0.12.0 failed") == 2


def test_a_lasting_refusal_names_the_module_and_the_remedy(tmp_path: Path) -> None:
    result = _run(tmp_path, fail_times=99, tries=3)
    assert result.returncode != 0
    assert (tmp_path / "count").read_text().strip() == "3"
    assert "could not fetch sigs.k8s.io/jobset@v0.12.0: 3 tries failed" in result.stderr
    assert "GOPROXY" in result.stderr  # the remedy for Go modules
