import postgres from 'postgres'

export type Sql = postgres.Sql<{ bigint: number }>

/**
 * The one connection pool of a process. bigint (int8) columns arrive as JS
 * numbers: every id and amount here stays far below 2^53, and JSON clients
 * expect numbers.
 */
export function createSql(url: string, options: { max?: number } = {}): Sql {
  return postgres(url, {
    max: options.max ?? 10,
    onnotice: () => {},
    connection: { application_name: 'waitress', TimeZone: 'UTC' },
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
