/**
 * CPU time of processes from /proc (Linux), in milliseconds.
 *
 * A process's utime + stime (fields 14 and 15 of /proc/<pid>/stat) cover all
 * of its threads; cutime + cstime (16, 17) the children it has reaped. The
 * database's CPU is the postmaster's tree: its own, that of every live child
 * (backends, WAL writer, checkpointer, autovacuum, …) and of the children that
 * already exited. So a backend that ends during a cell still counts, and a
 * service that forks workers is counted whole.
 */
import { readdirSync, readFileSync } from 'node:fs'

export interface ProcStat {
  pid: number
  comm: string
  ppid: number
  /** Clock ticks. */
  utime: number
  stime: number
  cutime: number
  cstime: number
}

/** Parses one /proc/<pid>/stat line; comm may contain spaces and parentheses. */
export function parseStat(line: string): ProcStat {
  const open = line.indexOf('(')
  const close = line.lastIndexOf(')')
  const fields = line.slice(close + 2).split(' ')
  // fields[0] is field 3 (state) of proc(5).
  return {
    pid: Number(line.slice(0, open).trim()),
    comm: line.slice(open + 1, close),
    ppid: Number(fields[1]),
    utime: Number(fields[11]),
    stime: Number(fields[12]),
    cutime: Number(fields[13]),
    cstime: Number(fields[14]),
  }
}

export function readStat(pid: number): ProcStat | undefined {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return undefined
  }
}

let ticksPerSecond: number | undefined

/** CLK_TCK: the unit of the times in /proc/<pid>/stat (100 on every usual Linux). */
export function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      const out = Bun.spawnSync(['getconf', 'CLK_TCK']).stdout.toString().trim()
      ticksPerSecond = Number(out) > 0 ? Number(out) : 100
    } catch {
      ticksPerSecond = 100
    }
  }
  return ticksPerSecond
}

const toMs = (ticks: number) => (ticks * 1000) / clockTicks()

/** CPU time of one process (all its threads and reaped children), or NaN when it is gone. */
export function processCpuMs(pid: number): number {
  const stat = readStat(pid)
  return stat ? toMs(stat.utime + stat.stime + stat.cutime + stat.cstime) : Number.NaN
}

/**
 * CPU time of each process tree: the process, all its live descendants, and
 * the children each of them has reaped (cutime + cstime), NaN for a process
 * that is gone. For PostgreSQL, the tree of the postmaster is the whole
 * server: backends, WAL writer, checkpointer, autovacuum, and the backends
 * that have exited. One scan of /proc serves every root.
 */
export function treeCpuMs(rootPids: number[]): number[] {
  const byParent = new Map<number, ProcStat[]>()
  const byPid = new Map<number, ProcStat>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const stat = readStat(Number(entry))
    if (!stat) continue
    byPid.set(stat.pid, stat)
    byParent.set(stat.ppid, [...(byParent.get(stat.ppid) ?? []), stat])
  }
  return rootPids.map((rootPid) => {
    const root = byPid.get(rootPid)
    if (!root) return Number.NaN
    let ticks = 0
    const stack = [root]
    while (stack.length) {
      const stat = stack.pop()!
      ticks += stat.utime + stat.stime + stat.cutime + stat.cstime
      stack.push(...(byParent.get(stat.pid) ?? []))
    }
    return toMs(ticks)
  })
}

/**
 * The postmaster of the backend with this pid (from `select pg_backend_pid()`),
 * when that server runs on this machine and /proc shows it; else undefined
 * (a remote DATABASE_URL: the database's CPU is then not measured).
 */
export function postmasterOf(backendPid: number): number | undefined {
  const backend = readStat(backendPid)
  if (!backend || !/postgres/.test(backend.comm)) return undefined
  const parent = readStat(backend.ppid)
  if (!parent || !/postgres|postmaster/.test(parent.comm)) return undefined
  return parent.pid
}

/**
 * CPU time the whole machine spent busy, over all cores, from the first line
 * of /proc/stat (user, nice, system, irq, softirq and steal: time the
 * hypervisor gave to other guests). Less the processes measured, it shows how
 * much else ran during a cell on a shared machine.
 */
export function machineBusyMs(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]
    const [user, nice, system, _idle, _iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number)
    return toMs(user + nice + system + irq + softirq + (steal || 0))
  } catch {
    return Number.NaN
  }
}
