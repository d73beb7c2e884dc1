"""benchmarks/sim_counts.py reads callgrind_annotate's listing: every column format counts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import sim_counts  # noqa: E402

#: Lines as callgrind_annotate 3.19 prints them: counts with a share, a bare
#: "0" (no share), "." (none of that event), and one name in two objects.
LISTING = """\
--------------------------------------------------------------------------------
Ir                  Dr                  Dw                  I1mr             D1mr             D1mw             ILmr         DLmr             DLmw              file:function
--------------------------------------------------------------------------------
1,010,962,206 (100.0%) 298,528,726 (100.0%) 181,475,255 (100.0%) 24,546,115 (100.0%) 11,800,511 (100.0%) 3,714,069 (100.0%) 8,691 (100.0%) 1,442,373 (100.0%) 1,330,730 (100.0%)  PROGRAM TOTALS
64,215,492 ( 6.35%) 15,802,655 ( 5.29%) 10,100,660 ( 5.57%) 249,553 ( 1.02%) 989,335 ( 8.38%)   9,889 ( 0.27%)  69 ( 0.79%) 203,865 (14.13%)      33 ( 0.00%)  /tmp/Python-3.11.7/Objects/dictobject.c:_Py_dict_lookup [/lib/libpython3.11.so.1.0]
23,194,033 ( 2.29%)  6,069,629 ( 2.03%)  3,604,890 ( 1.99%)  37,326 ( 0.15%)  16,775 ( 0.14%)       0           23 ( 0.26%)   2,647 ( 0.18%)       .           /tmp/Python-3.11.7/Objects/tupleobject.c:tupledealloc [/lib/libpython3.11.so.1.0]
11,257,248 ( 1.11%)  1,876,208 ( 0.63%)    938,104 ( 0.52%)  16,755 ( 0.07%)       0                0            1 ( 0.01%)       .                .           build/__native.c:CPyDef_scheduler___state___SchedulerState___assign [/src/teamster/core/scheduler/state.cpython-311-x86_64-linux-gnu.so]
         100 ( 0.00%)         10 ( 0.00%)          5 ( 0.00%)       1 ( 0.00%)       0                0            0                7 ( 0.00%)       3 ( 0.00%)  build/other.c:CPyDef_scheduler___state___SchedulerState___assign [/src/other.so]
"""


def test_every_column_format_is_read() -> None:
    rows = sim_counts.parse_annotate(LISTING)
    assert set(rows) == {"_Py_dict_lookup", "tupledealloc",
                         "CPyDef_scheduler___state___SchedulerState___assign"}
    assert rows["_Py_dict_lookup"] == [64_215_492, 15_802_655, 10_100_660, 249_553, 989_335,
                                       9_889, 69, 203_865, 33]
    # A bare "0" and "." are zeros in their own columns, not the next column shifted in.
    assert rows["tupledealloc"] == [23_194_033, 6_069_629, 3_604_890, 37_326, 16_775, 0, 23,
                                    2_647, 0]
    # The same function in two objects is one row, summed.
    assert rows["CPyDef_scheduler___state___SchedulerState___assign"] == [
        11_257_348, 1_876_218, 938_109, 16_756, 0, 0, 1, 7, 3]


def test_neither_the_cores_nor_the_simulator_call_map() -> None:
    """sim_counts switches counting on and off at ``map_next`` (the replay
    and ``--in-sim`` call ``handle`` through ``map``): a ``map`` inside the
    scheduler core would switch it off within ``handle`` and drop that work
    from the counts; one in the simulator or the worker core (``--in-sim``
    runs them between the scheduler's events) would count their work too."""
    src = Path(__file__).resolve().parents[2] / "src" / "teamster"
    calls = [f"{path.relative_to(src)}:{n}"
             for package in ("core", "sim") for path in sorted((src / package).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"\bmap\(", line.split("#")[0])]
    assert not calls, calls


def test_the_in_sim_script_runs_the_simulation_through_its_counted_handle() -> None:
    """The ``--in-sim`` script, without callgrind: every scheduler event goes
    through the wrapper that calls ``handle`` in ``map``, and the run completes."""
    proc = subprocess.run([sys.executable, "-c", sim_counts.IN_SIM, "million", "4", "300", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.fullmatch(r"handled (\d+) of (\d+) events; executed (\d+)",
                     proc.stdout.strip().splitlines()[-1])
    assert m, proc.stdout
    handled, events, executed = map(int, m.groups())
    assert handled == events > 300
    assert executed >= 300


def test_a_last_level_that_callgrind_cannot_simulate_is_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        sim_counts.main(["--last-level", "3M,16"])
    err = capsys.readouterr().err
    assert "'3M,16': size / (ways * 64 bytes) must be a power of two of sets" in err
    with pytest.raises(SystemExit):
        sim_counts.main(["--last-level", "1G"])
    assert "is not SIZE[,WAYS] with SIZE in K or M" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sim_counts.main(["--last-level", "512K,0"])
    assert "'512K,0': a cache has at least one way" in capsys.readouterr().err


def test_last_level_sizes_read_as_the_caches_they_name() -> None:
    assert sim_counts.cache_spec(sim_counts.LAST_LEVEL) == (512 * 1024, 8)
    assert sim_counts.cache_spec("32M") == (32 * 1024 * 1024, 16)
    assert sim_counts.describe(sim_counts.cache_spec("32m,16")) == "32 MiB, 16-way"
