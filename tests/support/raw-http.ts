import { connect } from 'node:net'

export interface RawReply {
  status: number
  headers: Record<string, string>
  body: any
}

/**
 * One HTTP/1.1 request written by hand on a socket: exactly the headers given
 * and nothing else (no Content-Type unless it is among them), as a client
 * such as Go's net/http sends it. Content-Length is added for a body.
 */
export function rawRequest(
  port: number,
  method: string,
  path: string,
  body?: string,
  headers: Record<string, string> = {},
): Promise<RawReply> {
  const bytes = body === undefined ? undefined : Buffer.from(body, 'utf8')
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', 'User-Agent: Go-http-client/1.1']
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`)
  if (bytes) lines.push(`Content-Length: ${bytes.byteLength}`)
  const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1')

  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    // write, not end: a half-closed socket may be dropped before the response is sent.
    socket.on('connect', () => socket.write(bytes ? Buffer.concat([head, bytes]) : head))
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', reject)
    socket.on('close', () => {
      try {
        resolve(parseResponse(Buffer.concat(chunks)))
      } catch (error) {
        reject(error)
      }
    })
  })
}

function parseResponse(raw: Buffer): RawReply {
  const split = raw.indexOf('\r\n\r\n')
  if (split < 0) throw new Error(`no HTTP response: ${raw.toString('latin1').slice(0, 200)}`)
  const [statusLine, ...headerLines] = raw.subarray(0, split).toString('latin1').split('\r\n')
  const status = Number(statusLine.split(' ')[1])
  const headers: Record<string, string> = {}
  for (const line of headerLines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  let payload = raw.subarray(split + 4)
  if (headers['transfer-encoding']?.toLowerCase() === 'chunked') {
    const parts: Buffer[] = []
    for (let at = 0; ; ) {
      const end = payload.indexOf('\r\n', at)
      const size = parseInt(payload.subarray(at, end).toString('latin1'), 16)
      if (!size) break
      parts.push(payload.subarray(end + 2, end + 2 + size))
      at = end + 2 + size + 2
    }
    payload = Buffer.concat(parts)
  }
  const text = payload.toString('utf8')
  let body: unknown = text
  try {
    body = JSON.parse(text)
  } catch {}
  return { status, headers, body }
}
