"""``--nproc N``: a command run again in N processes under torchrun, with the options it was given."""

from __future__ import annotations

from typing import Any, Iterable


def command_line(context: Any, *, drop: Iterable[str] = ()) -> list[str]:
    """The command of ``context`` (a click context, as typer passes it) as arguments that parse to the same
    parameters (every option written out by its long name, defaults included), without those named in ``drop``."""
    skipped = set(drop)
    args = [context.info_name or ""]
    for param in context.command.params:
        value = context.params.get(param.name)
        if param.name in skipped or value is None:
            continue
        if param.param_type_name == "argument":
            args.extend(str(v) for v in value) if isinstance(value, (list, tuple)) else args.append(str(value))
            continue
        name = max(param.opts, key=len)
        if param.is_flag:
            if value:
                args.append(name)
            elif param.secondary_opts:
                args.append(max(param.secondary_opts, key=len))
        elif param.multiple:
            for item in value:
                args.extend([name, str(item)])
        else:
            args.extend([name, str(value)])
    return args


def relaunch(context: Any, nproc: int) -> int:
    """Run ``context``'s command (without ``--nproc``) as ``torchrun --standalone --nproc-per-node nproc -m
    medseg ...``; returns its exit code."""
    from medseg.distributed import launch_local, torchrun_role
    from medseg.errors import MedsegError

    role = torchrun_role()
    if role.launched:
        raise MedsegError(f"--nproc {nproc} inside a torchrun job (rank {role.rank} of {role.world_size})",
                          fix="give torchrun --nproc-per-node, or --nproc without torchrun, not both")
    return launch_local(nproc, command_line(context, drop=["nproc"]))
