"""The pipeline config (config/config.yaml plus ``--config`` overrides), checked at parse time
with the command line's bad-input contract: one line naming the field, exit status 2.

Snakemake's own ``snakemake.utils.validate`` prints a multi-line jsonschema report whose first
line does not name the field. :func:`validate_config` checks the same schema
(workflow/schemas/config.schema.yaml) with the grid's validator (defaults filled in the same way,
16.0 is not an integer), and raises
:class:`~hrta.spec.SpecError` ("config.<field>: expected <what>, got <value>").
:func:`exit_on_bad_input` turns a SpecError raised while the Snakefile is parsed (a bad config
or grid file) into that one line on stderr and exit status 2, before any job runs.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import yaml

from hrta.grid import _schema_error, _validator
from hrta.spec import SpecError

EXIT_BAD_INPUT = 2


def validate_config(config: dict, schema_path: Path | str) -> dict:
    """Check ``config`` against the JSON Schema at ``schema_path`` and fill in its defaults
    (in place, as Snakemake's ``validate`` does); return it. Raises SpecError on the first
    problem (the shallowest field first), its path starting with ``config.``."""
    if not isinstance(config, dict):
        raise SpecError("config", "a mapping", config)
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(_validator(schema).iter_errors(config),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise _schema_error(errors[0], "config")
    return config


@contextlib.contextmanager
def exit_on_bad_input():
    """Inside the Snakefile: a SpecError becomes ``hrta: error: <message>`` on stderr and
    exit status 2 (no traceback, no Snakemake report, nothing run)."""
    try:
        yield
    except SpecError as err:
        print(f"hrta: error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
