"""Printing figures as ratios against their same-run baselines."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    name: str
    kiam: float
    baseline: float
    unit: str
    higher_is_better: bool

    @property
    def ratio(self) -> float:
        """kiam / baseline: above 1 means kiam's figure is the larger one."""
        return self.kiam / self.baseline if self.baseline else float("inf")


def print_table(title: str, baseline_name: str, figures: list[Figure]) -> None:
    print(f"\n## {title}  (baseline: {baseline_name})")
    print(f"{'figure':<40} {'kiam':>12} {'baseline':>12} {'ratio':>8}  better")
    for f in figures:
        better = "higher" if f.higher_is_better else "lower"
        print(
            f"{f.name:<40} {_fmt(f.kiam, f.unit):>12} {_fmt(f.baseline, f.unit):>12} "
            f"{f.ratio:>7.2f}x  {better}"
        )
    print(flush=True)


def print_values(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n## {title}")
    for name, value in rows:
        print(f"{name:<40} {value:>12}")
    print(flush=True)


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.2f}ms" if value < 1 else f"{value:.2f}s"
    if unit == "B":
        return fmt_bytes(value)
    return f"{value:,.0f}{unit}"


def fmt_bytes(value: float) -> str:
    for suffix, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f}{suffix}"
    return f"{value:.0f}B"
