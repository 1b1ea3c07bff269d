import postgres from 'postgres'

export type Sql = postgres.Sql<{ bigint: number }>

/**
 * The one connection pool of a process. With `role`, every session runs as
 * that role (the API's: it can call the functions and read, nothing more). bigint (int8) columns arrive as JS
 * numbers: every id and amount here stays far below 2^53, and JSON clients
 * expect numbers.
 */
export function createSql(url: string, options: { max?: number; role?: string } = {}): Sql {
  return postgres(url, {
    max: options.max ?? 10,
    onnotice: () => {},
    connection: {
      application_name: 'waitress',
      TimeZone: 'UTC',
      // Sent at connect, so every session of the pool acts as this role.
      ...(options.role ? { role: options.role } : {}),
    },
    types: {
      bigint: {
        to: 20,
        from: [20],
        serialize: (value: number) => String(value),
        parse: (value: string) => Number(value),
      },
    },
  })
}
