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

import argparse
import os
import socket
import subprocess
import sys
import time
from typing import List, Sequence

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


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n')[0],
      usage='%(prog)s [options] -- <launch/train.py flags>')
  parser.add_argument('--num_processes', type=int, default=2)
  parser.add_argument('--devices_per_process', type=int, default=4)
  parser.add_argument('--log_dir', default='',
                      help='default: <workdir>/logs')
  parser.add_argument('--timeout', type=float, default=0.0,
                      help='seconds; 0 = none')
  parser.add_argument('train_args', nargs='*',
                      help='flags for launch/train.py (after --)')
  args = parser.parse_args(argv)
  sys.exit(run(args.train_args, args.num_processes,
               args.devices_per_process, args.log_dir, args.timeout))


if __name__ == '__main__':
  main()
