import { createConnection, createServer, type Server, type Socket } from 'node:net'

/**
 * A TCP relay in front of PostgreSQL that reads what clients send: the
 * type of every frontend message (P Parse, B Bind, D Describe, E Execute,
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
  const target = new URL(databaseUrl)
  let types: string[] = []
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    const upstream = createConnection({ host: target.hostname, port: Number(target.port || 5432) })
    sockets.add(client).add(upstream)
    let pending = Buffer.alloc(0)
    let started = false
    client.on('data', (chunk: Buffer) => {
      upstream.write(chunk)
      pending = Buffer.concat([pending, chunk])
      for (;;) {
        // The startup packet (and an SSL request) has no type byte.
        const header = started ? 5 : 4
        if (pending.length < header) break
        const length = started ? pending.readInt32BE(1) + 1 : pending.readInt32BE(0)
        if (pending.length < length) break
        if (started) {
          const type = String.fromCharCode(pending[0])
          if (type !== 'p') types.push(type) // p: a password or SASL answer
        } else if (pending.readInt32BE(4) === 196608) started = true // protocol 3.0: the startup packet itself
        pending = pending.subarray(length)
      }
    })
    upstream.on('data', (chunk) => client.write(chunk))
    const end = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('close', end).on('error', end)
    upstream.on('close', end).on('error', end)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const relayed = new URL(databaseUrl)
  relayed.hostname = '127.0.0.1'
  relayed.port = String((server.address() as { port: number }).port)
  return {
    url: relayed.toString(),
    sent: () => [...types],
    reset: () => void (types = []),
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
