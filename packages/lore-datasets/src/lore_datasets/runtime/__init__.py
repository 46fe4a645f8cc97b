"""The runtime every lore command shares, kept apart from the data code.

- `runtime.cli`: ``run_cli`` (an expected failure as one line, exit 2),
  ``ArgumentParser`` (usage errors as one line), ``resolve_device`` and
  ``console_entry``, the body of every console script;
- `runtime.outputs`: atomic files, output-directory checks, and ``publish``,
  the one directory swap (an ``--overwrite`` run or a staged torchrun run
  replacing its output as a whole), over `runtime.durable` (fsync, the lock,
  the journaled swap and its recovery);
- `runtime.settings`: settings dataclasses as command flags, and stored
  records read back;
- `runtime.collectives`: the process group under torchrun and its
  time-bounded collectives.

It lives in lore-datasets, the lowest package with a command
(`lore-prepare`), so that `lore-train` and `lore-eval` share it without
importing each other. Nothing here imports the data modules.
"""
