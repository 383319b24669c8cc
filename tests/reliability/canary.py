"""A module no request may ever import: the hostile-input test names it as a trainer."""

IMPORTED = True
TRAINER = None
