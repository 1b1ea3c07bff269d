/**
 * Bounded database concurrency with a fair queue in front of it.
 *
 * At most `concurrency` statements run at once (one per pooled connection);
 * the rest wait in arrival order. A request that would wait longer than
 * `maxWaitMs`, or arrive when `maxQueue` are already waiting, is refused at
 * once with a DatabaseBusyError (503 + Retry-After), instead of piling up
 * until clients time out. A hot product's row lock bounds throughput; letting
 * more sessions queue on it inside PostgreSQL only adds lock traffic.
 */
export class DatabaseBusyError extends Error {
  constructor(readonly reason: 'queue_full' | 'queue_timeout' | 'query_timeout') {
    super(
      reason === 'queue_full'
        ? 'too many requests are waiting for the database'
        : reason === 'queue_timeout'
          ? 'waited too long for the database'
          : 'the database did not answer in time',
    )
  }
}

export interface GateStats {
  inUse: number
  waiting: number
}

export class Gate {
  private running = 0
  private readonly queue: { start: () => void; timer?: ReturnType<typeof setTimeout> }[] = []

  constructor(
    private readonly concurrency: number,
    private readonly maxQueue: number,
    private readonly maxWaitMs: number,
  ) {}

  get stats(): GateStats {
    return { inUse: this.running, waiting: this.queue.length }
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.running >= this.concurrency) await this.wait()
    else this.running++
    try {
      return await work()
    } finally {
      this.release()
    }
  }

  private wait(): Promise<void> {
    if (this.queue.length >= this.maxQueue) return Promise.reject(new DatabaseBusyError('queue_full'))
    return new Promise((resolve, reject) => {
      const entry: (typeof this.queue)[number] = { start: resolve }
      entry.timer = setTimeout(() => {
        const index = this.queue.indexOf(entry)
        if (index >= 0) this.queue.splice(index, 1)
        reject(new DatabaseBusyError('queue_timeout'))
      }, this.maxWaitMs)
      this.queue.push(entry)
    })
  }

  private release() {
    const next = this.queue.shift()
    if (!next) {
      this.running--
      return
    }
    clearTimeout(next.timer)
    next.start()
  }
}
