"""The schedule key: an Airflow preset or a five-field cron expression, checked without Airflow."""

from __future__ import annotations

import difflib

SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@annually")
# Cron fields: name, lowest, highest, names allowed in place of numbers.
CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)


def check_schedule(value: str) -> None:
    """Accept an Airflow preset or a five-field cron expression; raise ValueError naming the bad part."""
    if value.startswith("@"):
        if value not in SCHEDULE_PRESETS:
            close = difflib.get_close_matches(value, SCHEDULE_PRESETS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(SCHEDULE_PRESETS)}"
            raise ValueError(f"unknown schedule preset '{value}'; {hint}")
        return
    fields = value.split()
    if len(fields) != 5:
        raise ValueError(
            f"schedule '{value}' has {len(fields)} fields; write a preset (@daily) or cron 'minute hour day month weekday'"
        )
    for text, (name, low, high, names) in zip(fields, CRON_FIELDS, strict=True):
        for part in text.split(","):
            base, _, step = part.partition("/")
            if step and not step.isdigit():
                raise ValueError(f"schedule '{value}': step '{step}' in the {name} field is not a number")
            bounds = [] if base == "*" else base.split("-", 1)
            for bound in bounds:
                number = names.index(bound.lower()) + low if bound.lower() in names else None
                if number is None and not bound.isdigit():
                    raise ValueError(f"schedule '{value}': '{part}' is not valid in the {name} field ({low}-{high})")
                if not low <= (number if number is not None else int(bound)) <= high:
                    raise ValueError(f"schedule '{value}': {bound} is out of range for the {name} field ({low}-{high})")

