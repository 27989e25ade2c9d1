r"""Runs ``launch/train.py`` as N processes on this machine (multi-host test).

  python launch/multihost_local.py --num_processes=2 --devices_per_process=4 \
      -- --config=configs/single.py:translate_en_de,tiny --workdir=/tmp/mh

Each process gets ``devices_per_process`` fake CPU devices (XLA_FLAGS) and
joins ``jax.distributed.initialize`` through a coordinator on 127.0.0.1 at a
free port (``--config.distributed.*`` overrides are appended for it). CPU
collectives across processes use gloo (jax's default). Output of process i
goes to ``<log_dir>/process_<i>.log`` (default: beside the workdir's
metrics, ``<workdir>/logs``). Exits with the first non-zero return code, after
stopping the other processes; a ``--timeout`` stops all of them.
"""

import os
import socket
import subprocess
import sys
import time
from typing import List, Sequence

from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, 'launch', 'train.py')


def free_port() -> int:
  """A TCP port on 127.0.0.1 that is free right now."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def process_env(devices: int) -> dict:
  """This environment with ``devices`` fake CPU devices and CPU only."""
  env = dict(os.environ)
  flags = [f for f in env.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  env['XLA_FLAGS'] = ' '.join(
      flags + [f'--xla_force_host_platform_device_count={devices}'])
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def commands(train_args: Sequence[str], num_processes: int,
             port: int) -> List[List[str]]:
  """One ``launch/train.py`` command line per process."""
  return [[sys.executable, TRAIN, *train_args,
           '--config.distributed.initialize=True',
           f'--config.distributed.coordinator_address=127.0.0.1:{port}',
           f'--config.distributed.num_processes={num_processes}',
           f'--config.distributed.process_id={i}']
          for i in range(num_processes)]


def _workdir(train_args: Sequence[str]) -> str:
  for arg in train_args:
    if arg.startswith('--workdir='):
      return arg.split('=', 1)[1]
  raise SystemExit('Pass --workdir=DIR to train.py (after --).')


def run(train_args: Sequence[str], num_processes: int = 2,
        devices_per_process: int = 4, log_dir: str = '',
        timeout: float = 0.0) -> int:
  """Starts the processes, waits for all; returns the first failing code."""
  log_dir = log_dir or os.path.join(_workdir(train_args), 'logs')
  os.makedirs(log_dir, exist_ok=True)
  env = process_env(devices_per_process)
  procs, logs = [], []
  for i, cmd in enumerate(commands(train_args, num_processes, free_port())):
    log = open(os.path.join(log_dir, f'process_{i}.log'), 'w')
    logs.append(log)
    procs.append(subprocess.Popen(cmd, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=REPO))
  deadline = time.monotonic() + timeout if timeout else None
  code = 0
  try:
    while any(p.poll() is None for p in procs):
      failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
      if failed or (deadline and time.monotonic() > deadline):
        code = failed[0] if failed else 124
        break
      time.sleep(0.2)
    else:
      code = next((p.returncode for p in procs if p.returncode), 0)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for log in logs:
      log.close()
  if code:
    print(f'multihost_local: failed with code {code}; logs in {log_dir}',
          file=sys.stderr)
  return code


def parse_flags(argv: Sequence[str]):
  """(flags, launch/train.py args) of ``argv`` (no program name), in a
  private ``FlagValues``; a bad flag is a SystemExit naming it."""
  fv = flags.FlagValues()
  flags.DEFINE_integer('num_processes', 2, 'Processes to start.',
                       flag_values=fv)
  flags.DEFINE_integer('devices_per_process', 4,
                       'Fake CPU devices per process.', flag_values=fv)
  flags.DEFINE_string('log_dir', '', 'Default: <workdir>/logs.',
                      flag_values=fv)
  flags.DEFINE_float('timeout', 0.0, 'Seconds; 0 = none.', flag_values=fv)
  try:
    rest = fv(['multihost_local'] + list(argv))
  except flags.Error as e:
    raise SystemExit(f'launch/multihost_local.py: {e} (usage: '
                     'launch/multihost_local.py [flags] -- <launch/train.py '
                     'flags>)') from None
  return fv, rest[1:]


def main(argv=None):
  fv, train_args = parse_flags(sys.argv[1:] if argv is None else argv)
  sys.exit(run(train_args, fv.num_processes, fv.devices_per_process,
               fv.log_dir, fv.timeout))


if __name__ == '__main__':
  main()
