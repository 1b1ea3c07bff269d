/**
 * Mints a development bearer token for the API, signed with AUTH_JWT_SECRET
 * (from the environment or .env, which Bun reads):
 *
 *   npm run token -- --sub 42                   # valid for 1 hour
 *   npm run token -- --sub 42 --ttl 8h
 *   npm run token -- --sub 1 --role operator    # may read GET /inventory/audit
 *
 * Then: curl -H "Authorization: Bearer $(npm run -s token -- --sub 42)" …
 */
import { parseArgs } from 'node:util'
import { jwt } from '@elysiajs/jwt'
import { MIN_JWT_SECRET_LENGTH } from '../src/config.ts'

const { values } = parseArgs({ options: { sub: { type: 'string' }, ttl: { type: 'string', default: '1h' }, role: { type: 'string' } } })
const secret = process.env.AUTH_JWT_SECRET
if (!values.sub || !/^[1-9][0-9]{0,14}$/.test(values.sub)) {
  console.error('usage: npm run token -- --sub <user id> [--ttl 1h] [--role operator]')
  process.exit(2)
}
if (!secret || secret.length < MIN_JWT_SECRET_LENGTH) {
  console.error(`AUTH_JWT_SECRET must be set (at least ${MIN_JWT_SECRET_LENGTH} characters), as for the service`)
  process.exit(2)
}
if (values.role !== undefined && values.role !== 'operator') {
  console.error('--role takes one value: operator')
  process.exit(2)
}
const claims = { sub: values.sub, exp: values.ttl, ...(values.role ? { role: values.role } : {}) }
console.log(await jwt({ name: 'jwt', secret, alg: 'HS256' }).decorator.jwt.sign(claims))
