// A placeholder page: connects, asks for the status, shows it.
const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
ws.onopen = () => ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "status" }));
ws.onmessage = (e) => { document.getElementById("status").textContent = e.data; };
