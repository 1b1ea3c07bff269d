import { FaultyProxy } from './proxy.ts'

/**
 * A relay in front of PostgreSQL (FaultyProxy) that reads what clients send:
 * the type of every frontend message (P Parse, B Bind, D Describe, E Execute,
 * S Sync, H Flush, Q Query, ...), in order. postgres.js sends a Flush only
 * when it stops to wait for a statement's description before binding it: a
 * round trip of its own.
 */
export interface WireWatch {
  /** The database URL, through the relay. */
  url: string
  /** The types of the messages clients sent since the last reset (startup and authentication excluded). */
  sent(): string[]
  reset(): void
  close(): Promise<void>
}

export async function watchWire(databaseUrl: string): Promise<WireWatch> {
  const relayed = new URL(databaseUrl)
  const proxy = await FaultyProxy.start(Number(relayed.port || 5432))
  let types: string[] = []
  proxy.observeClient = () => frontendMessages((type) => types.push(type))
  relayed.hostname = '127.0.0.1'
  relayed.port = String(proxy.port)
  return {
    url: relayed.toString(),
    sent: () => [...types],
    reset: () => void (types = []),
    close: () => proxy.stop(),
  }
}

/** Reads one connection's frontend stream, chunk by chunk, and tells the type of each message after the startup packet. */
function frontendMessages(onMessage: (type: string) => void): (chunk: Buffer) => void {
  let pending = Buffer.alloc(0)
  let started = false
  return (chunk) => {
    pending = Buffer.concat([pending, chunk])
    for (;;) {
      // The startup packet (and an SSL request) has no type byte.
      const header = started ? 5 : 4
      if (pending.length < header) return
      const length = started ? pending.readInt32BE(1) + 1 : pending.readInt32BE(0)
      if (pending.length < length) return
      if (started) {
        const type = String.fromCharCode(pending[0])
        if (type !== 'p') onMessage(type) // p: a password or SASL answer
      } else if (pending.readInt32BE(4) === 196608) started = true // protocol 3.0: the startup packet itself
      pending = pending.subarray(length)
    }
  }
}
