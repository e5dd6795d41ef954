// The open-files limit (RLIMIT_NOFILE). Every relayed connection holds descriptors (its two
// sockets, and a pipe per direction while bytes are in flight), so this limit, not memory, is
// what first caps how many connections a process can hold. Limits are JS numbers; Infinity
// stands for RLIM_INFINITY (which Linux never allows for RLIMIT_NOFILE, but getrlimit may report
// for other resources).
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { systemError } from '../errors.js';
import { loadAddon } from './addon.js';

export interface OpenFilesLimit {
  readonly soft: number;
  readonly hard: number;
}

/**
 * The hard limit asked for when the process may raise it (CAP_SYS_RESOURCE), unless
 * /proc/sys/fs/nr_open is lower: past ~1M descriptors the fd table alone costs 8 MiB per process.
 */
const HARD_LIMIT_GOAL = 1 << 20;

const NR_OPEN_PATH = '/proc/sys/fs/nr_open';

/** The process's current soft and hard RLIMIT_NOFILE. */
export function getOpenFilesLimit(): OpenFilesLimit {
  const addon = loadAddon();
  const rc = addon.getrlimit(addon.constants.RLIMIT_NOFILE);
  if (typeof rc === 'number') throw systemError(rc, 'getrlimit');
  return { soft: rc[0], hard: rc[1] };
}

/** The kernel's ceiling for any process's RLIMIT_NOFILE, or null if it cannot be read. */
function readNrOpen(): number | null {
  try {
    const n = Number(readFileSync(NR_OPEN_PATH, 'utf8').trim());
    return Number.isSafeInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/**
 * Raises the soft RLIMIT_NOFILE to the hard limit. A process allowed to (root with
 * CAP_SYS_RESOURCE) first raises both to min(/proc/sys/fs/nr_open, 2^20); on EPERM it keeps the
 * current hard limit. Never lowers either. Returns the limits now in force and whether either
 * went up. Throws a Node-shaped system error (`code`, `errno`, `syscall`) for any other failure.
 */
export function raiseOpenFilesLimit(): { soft: number; hard: number; raised: boolean } {
  const addon = loadAddon();
  const resource = addon.constants.RLIMIT_NOFILE;
  const before = getOpenFilesLimit();
  let { hard } = before;
  const nrOpen = readNrOpen();
  if (nrOpen !== null) {
    const goal = Math.min(nrOpen, HARD_LIMIT_GOAL);
    if (goal > hard) {
      const rc = addon.setrlimit(resource, goal, goal);
      if (rc === 0) hard = goal;
      else if (rc !== -osConstants.errno.EPERM) throw systemError(rc, 'setrlimit');
    }
  }
  // A hard limit of RLIM_INFINITY cannot be a soft one for RLIMIT_NOFILE: nr_open is the most.
  const softGoal = Number.isFinite(hard) ? hard : nrOpen;
  const current = getOpenFilesLimit();
  if (softGoal !== null && current.soft < softGoal) {
    const rc = addon.setrlimit(resource, softGoal, current.hard);
    if (rc < 0) throw systemError(rc, 'setrlimit');
  }
  const after = getOpenFilesLimit();
  return { soft: after.soft, hard: after.hard, raised: after.soft > before.soft || after.hard > before.hard };
}
