import { resolve } from 'node:path'

export interface BuyerReply {
  cart_id: number
  /** 0 when the request itself failed. */
  status: number
  body: any
  ms: number
}

/**
 * Spawns one OS process per group of carts, waits until every process is
 * ready, releases them all with one signal and returns every checkout's
 * reply. `duringRace` runs once they are released, alongside them (e.g. a
 * start line that lets go once they are seen waiting).
 */
export async function raceBuyers<T = void>(
  baseUrl: string,
  cartGroups: number[][],
  duringRace: () => Promise<T> = async () => undefined as T,
): Promise<{ replies: BuyerReply[]; during: T }> {
  const children = cartGroups.map((cartIds) =>
    Bun.spawn([process.execPath, resolve(import.meta.dir, 'buyer.ts')], {
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: 'inherit',
      env: { ...process.env, WAITRESS_URL: baseUrl, BUYER_CART_IDS: JSON.stringify(cartIds) },
    }),
  )
  const outputs = children.map((child) => lines(child.stdout))
  await Promise.all(
    outputs.map(async (output) => {
      const { value } = await output.next()
      if (value !== 'ready') throw new Error(`buyer process did not get ready: ${value}`)
    }),
  )
  for (const child of children) {
    child.stdin.write('go\n')
    child.stdin.flush()
  }
  const results: BuyerReply[] = []
  const [during] = await Promise.all([
    duringRace(),
    ...outputs.map(async (output) => {
      for await (const line of output) if (line.trim()) results.push(JSON.parse(line))
    }),
  ])
  const codes = await Promise.all(children.map((child) => child.exited))
  if (codes.some((code) => code !== 0)) throw new Error(`buyer processes exited with ${codes}`)
  return { replies: results, during }
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder()
  let buffered = ''
  for await (const chunk of stream) {
    buffered += decoder.decode(chunk, { stream: true })
    let newline: number
    while ((newline = buffered.indexOf('\n')) >= 0) {
      yield buffered.slice(0, newline)
      buffered = buffered.slice(newline + 1)
    }
  }
  if (buffered) yield buffered
}
