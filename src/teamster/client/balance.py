"""A balance report as text: what ``teamster demo`` prints after its run."""

from __future__ import annotations

from typing import Any


def format_report(report: dict[str, Any], names: dict[str, str] | None = None) -> str:
    """The report of ``Client.balance_report()`` as a small table."""
    if not report.get("tasks"):
        return "balance report: no computation finished yet"
    names = names or {}
    ratio = report.get("ratio")
    lines = [
        f"makespan             {report['makespan']:8.2f} s",
        f"lower bound          {report['lower_bound']:8.2f} s   (max(work bound "
        f"{report['work_bound']:.2f} s, critical path {report['critical_path']:.2f} s))",
        f"makespan / bound     {ratio:8.2f}" if ratio else "makespan / bound          n/a",
        f"tasks                {report['tasks']:8d}   work {report['work']:.2f} s",
        f"moved between workers {report['bytes_moved'] / 1e6:7.1f} MB in "
        f"{report['transfers']} transfers",
        f"steals               {report['steals']:8d}   ({report['steal_requests']} asked, "
        f"{report['steals_refused']} refused)",
        "per worker:           tasks    busy s   busy %",
    ]
    workers = report.get("workers", {})
    for addr in sorted(workers, key=lambda a: names.get(a, a)):
        w = workers[addr]
        lines.append(f"  {names.get(addr, addr):<18} {w['tasks']:7d} {w['busy']:9.2f} "
                     f"{100 * w['utilisation']:7.0f}%")
    return "\n".join(lines)
