// Files imported as text (`with { type: 'text' }`): Bun reads them when it
// loads the module, and a bundler (bun build, esbuild under wrangler) inlines them.
declare module '*.js' {
  const text: string
  export default text
}
declare module '*.css' {
  const text: string
  export default text
}
