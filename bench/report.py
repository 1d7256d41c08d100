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
        return self.kiam / self.baseline if self.baseline else float("inf")


def print_table(title: str, baseline_name: str, figures: list[Figure]) -> None:
    print(f"\n## {title}  (baseline: {baseline_name})")
    print(f"{'figure':<34} {'kiam':>12} {'baseline':>12} {'ratio':>8}")
    for f in figures:
        print(
            f"{f.name:<34} {_fmt(f.kiam, f.unit):>12} {_fmt(f.baseline, f.unit):>12} "
            f"{f.ratio:>7.2f}x"
        )


def print_values(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n## {title}")
    for name, value in rows:
        print(f"{name:<34} {value:>12}")


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.2f}ms" if value < 1 else f"{value:.2f}s"
    if unit == "B":
        for suffix, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size:
                return f"{value / size:.1f}{suffix}"
        return f"{value:.0f}B"
    return f"{value:,.0f}{unit}"
