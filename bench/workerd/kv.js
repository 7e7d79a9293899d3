// Stand-in for Workers KV: serves revocations/v1/<n> from data bindings S<n>, as workerd's KV
// binding asks for it (GET /<url-encoded key>).
export default {
  async fetch(request, env) {
    const key = decodeURIComponent(new URL(request.url).pathname.slice(1));
    const match = /^revocations\/v1\/(\d+)$/.exec(key);
    const value = match && env["S" + match[1]];
    return value ? new Response(value) : new Response(null, { status: 404 });
  },
};
