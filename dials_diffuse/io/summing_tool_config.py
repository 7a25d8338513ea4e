"""Read the 2018 Eiger summing tool's config.yaml as frame_statistics arguments.

The 2018 Eiger summing tool was driven by a YAML file::

    in:            {master: ..._master.h5, start: 0, end: 0}
    filter:        {low: 0, high: 4500}
    out:           {file: True, path: /tmp/, plot: True, redis: False,
                    prefix: summed_eiger_frames, expire: 1}
    sys_settings:  {albula_path: ..., redis_ip: 10.0.0.1, threads: 4}

`start`/`end` are 0-based frame numbers, `end: 0` meaning the last frame;
they become the 1-based `image_range`. Outputs go to `out.path`, named after
the master file as that tool named them (`<master>.csv`, `.html`, ...).
`albula_path` is not needed (frames are read directly) and is ignored.
"""

from pathlib import Path

from dials_diffuse.util.errors import DataError

SECTIONS = {"in", "filter", "out", "sys_settings"}


def _section(config, name, path):
    value = config.get(name) or {}
    if not isinstance(value, dict):
        raise DataError(f"{path}: '{name}' must be a mapping of settings")
    return value


def arguments_from_summing_tool_config(path):
    """Command-line arguments (files and key=value) equivalent to a config.yaml.

    Parameters
    ----------
    path : str or Path
        The YAML file.

    Returns
    -------
    list of str
        The master file, then PHIL assignments; arguments given after them
        on the command line override them.
    """
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise DataError(f"{path}: not a readable YAML file ({error})") from error
    if not isinstance(config, dict) or not SECTIONS & set(config):
        raise DataError(
            f"{path}: not a frame-summing config (expected keys {', '.join(sorted(SECTIONS))})"
        )
    unknown = set(config) - SECTIONS
    if unknown:
        raise DataError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    inputs = _section(config, "in", path)
    filters = _section(config, "filter", path)
    out = _section(config, "out", path)
    system = _section(config, "sys_settings", path)

    args = []
    master = inputs.get("master")
    if master:
        args.append(str(master))
    start, end = int(inputs.get("start") or 0), int(inputs.get("end") or 0)
    if start or end:
        if end and end < start:
            raise DataError(f"{path}: in.end={end} is before in.start={start}")
        args.append(f"image_range={start + 1},{end + 1 if end else 0}")
    for key in ("low", "high"):
        if filters.get(key) is not None:
            args.append(f"{key}={filters[key]}")
    directory = Path(str(out.get("path") or "."))
    stem = Path(str(master)).name if master else "frame_statistics"
    names = {
        "series": f"{stem}.series.csv",
        "statistics": f"{stem}.csv",
        "html": f"{stem}.html",
        "plot": f"{stem}.png",
    }
    for key, name in names.items():
        wanted = out.get("plot", True) if key in ("html", "plot") else True
        if key == "series" and not out.get("file", True):
            wanted = False
        args.append(f"output.{key}={directory / name if wanted else None}")
    if out.get("redis"):
        args.append("redis.enabled=True")
    if out.get("prefix"):
        args.append(f"redis.prefix={out['prefix']}")
    if out.get("expire") is not None:
        args.append(f"redis.expire_days={out['expire']}")
    if system.get("redis_ip"):
        args.append(f"redis.host={system['redis_ip']}")
    if system.get("threads"):
        args.append(f"nproc={int(system['threads'])}")
    return args


def expand_config_files(args):
    """The command line with each config.yaml argument replaced by the
    arguments it stands for (`arguments_from_summing_tool_config`); arguments after
    it override its settings."""
    expanded = []
    for arg in args:
        if arg.lower().endswith((".yaml", ".yml")) and "=" not in arg:
            expanded.extend(arguments_from_summing_tool_config(arg))
        else:
            expanded.append(arg)
    return expanded
