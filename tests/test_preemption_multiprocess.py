"""Two real processes on 127.0.0.1 (jax.distributed, CPU collectives) agree on when to stop:
the flag of one process reaches both, at the same check, and only at a check step."""

import json
import textwrap

import pytest

from tests.helpers import free_port, start_cli

WORKER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import jax
    from sedd_jax.training.preemption import Preemption, any_process

    port, pid = sys.argv[1], int(sys.argv[2])
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
        initialization_timeout=60,
    )
    out = {"process_count": jax.process_count()}
    out["none"] = any_process(False)
    out["mine"] = any_process(pid == 1)
    with Preemption(check_every=3) as preemption:
        stops = []
        for step in range(1, 10):
            if pid == 1 and step == 4:
                os.kill(os.getpid(), signal.SIGUSR1)  # only process 1 is signalled
            stops.append(preemption.should_stop(step))
        out["stops"] = stops
        out["received"] = preemption.signal_name
    n = 50
    start = time.perf_counter()
    for _ in range(n):
        any_process(False)
    out["ms_per_agreement"] = 1e3 * (time.perf_counter() - start) / n
    print("RESULT " + json.dumps(out), flush=True)
    jax.distributed.shutdown()
    """
)


@pytest.mark.slow
def test_two_processes_stop_at_the_same_check_when_one_is_signalled(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    procs = [start_cli(str(script), port, i, env={"JAX_PLATFORMS": "cpu"}) for i in range(2)]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-3000:]
        line = [x for x in stdout.splitlines() if x.startswith("RESULT ")][0]
        results.append(json.loads(line[len("RESULT ") :]))
    for out in results:
        assert out["process_count"] == 2
        assert out["none"] is False and out["mine"] is True
        # signalled before step 4's check; steps 3, 6, 9 are the checks: both stop at 6
        assert out["stops"] == [False] * 5 + [True] * 4
    assert [out["received"] for out in results] == ["another process's signal", "SIGUSR1"]
    print("ms per agreement (2 CPU processes):", [round(o["ms_per_agreement"], 3) for o in results])
