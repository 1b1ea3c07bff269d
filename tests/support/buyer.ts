/**
 * One buyer process for the race tests: its own HTTP client, its own carts.
 * It prints "ready", waits for the start signal (a line on stdin) so that
 * every process is released at once, checks out each of its carts
 * concurrently and prints one JSON line per checkout.
 *
 * env: WAITRESS_URL, BUYER_CART_IDS (JSON array of cart ids)
 */
const baseUrl = process.env.WAITRESS_URL!
const cartIds: number[] = JSON.parse(process.env.BUYER_CART_IDS!)

console.log('ready')
for await (const _ of console) break

await Promise.all(
  cartIds.map(async (cartId) => {
    const started = performance.now()
    try {
      const response = await fetch(`${baseUrl}/carts/${cartId}/checkout`, { method: 'POST' })
      const body = await response.json()
      console.log(JSON.stringify({ cart_id: cartId, status: response.status, body, ms: performance.now() - started }))
    } catch (error) {
      console.log(JSON.stringify({ cart_id: cartId, status: 0, body: { error: String(error) }, ms: performance.now() - started }))
    }
  }),
)

export {}
