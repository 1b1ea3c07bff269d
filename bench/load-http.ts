/**
 * Load generator for the HTTP modes: `concurrency` buyers, each sending
 * `POST /orders {buyer_id, cart_item_ids}` for its cart over keep-alive
 * connections. Started by bench/bench.ts with a LoadConfig file.
 */
import { describeSqlError, readLoadConfig, runLoad } from './driver'

const config = readLoadConfig()
const url = `${config.serviceUrl}/orders`
const headers = { 'content-type': 'application/json' }

await runLoad(
  config,
  async (buyer) => {
    const response = await fetch(url, {
      method: 'POST',
      headers,
      body: JSON.stringify({ buyer_id: buyer!.buyerId, cart_item_ids: buyer!.itemIds }),
    })
    const text = await response.text()
    if (response.status === 201) return { ok: true, units: buyer!.itemIds.length }
    let code = ''
    try {
      code = JSON.parse(text).code ?? ''
    } catch {}
    return { ok: false, units: 0, error: `HTTP ${response.status}${code ? ` ${code}` : ''}` }
  },
  {
    needsBuyers: true,
    describeError: (error) => `fetch: ${(error as { code?: string }).code ?? describeSqlError(error)}`,
  },
)
process.exit(0)
