// Stand-in for the control plane's usage ingestion: reads each batch and acknowledges it.
export default {
  async fetch(request) {
    await request.arrayBuffer();
    return Response.json({ applied: true });
  },
};
