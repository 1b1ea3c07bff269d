import { createConnection, createServer, type Socket } from 'node:net'
import { Transform } from 'node:stream'

/**
 * A TCP proxy between the service and PostgreSQL, for fault tests: it can
 * add latency to every packet and cut every open connection at once; and
 * for tests of what a client sends, it can show each connection's bytes
 * towards the server to an observer of its own.
 */
export class FaultyProxy {
  latencyMs = 0
  /** Called for every new connection; what it returns sees every chunk the client sends. */
  observeClient?: () => (chunk: Buffer) => void
  private readonly sockets = new Set<Socket>()
  private readonly server = createServer((client) => this.relay(client))

  private constructor(private readonly upstreamPort: number) {}

  static async start(upstreamPort: number): Promise<FaultyProxy> {
    const proxy = new FaultyProxy(upstreamPort)
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve))
    return proxy
  }

  get port(): number {
    return (this.server.address() as { port: number }).port
  }

  /** Cuts every open connection (both directions), as a failing network would. */
  resetAll() {
    for (const socket of this.sockets) socket.destroy()
    this.sockets.clear()
  }

  async stop() {
    this.resetAll()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private relay(client: Socket) {
    const upstream = createConnection(this.upstreamPort, '127.0.0.1')
    for (const socket of [client, upstream]) {
      this.sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => {
        this.sockets.delete(socket)
        client.destroy()
        upstream.destroy()
      })
    }
    const observer = this.observeClient?.()
    if (observer) client.on('data', observer)
    client.pipe(this.delay()).pipe(upstream)
    upstream.pipe(this.delay()).pipe(client)
  }

  private delay() {
    return new Transform({
      transform: (chunk, _encoding, done) => {
        if (this.latencyMs <= 0) return done(null, chunk)
        setTimeout(() => done(null, chunk), this.latencyMs)
      },
    })
  }
}
