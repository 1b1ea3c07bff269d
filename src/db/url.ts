/** A connection string fit for a log line: the password replaced by ***. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    // libpq's several hosts (h1:p1,h2:p2) are no WHATWG URL: hide the password by hand.
    const hidden = url.replace(/^(postgres(?:ql)?:\/\/[^:@/]*:)[^@/]*@/, '$1***@')
    return /^postgres(?:ql)?:\/\//.test(hidden) ? hidden : '(unparseable DATABASE_URL)'
  }
}
