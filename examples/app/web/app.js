// frontend @VERSION@: lists the latest notes and adds one, through the
// backend's /api/notes (whichever backend release answers).
async function refresh(url, options) {
  const answer = await fetch(url || "/api/notes", options);
  const body = await answer.json();
  document.getElementById("backend").textContent = "backend: " + body.version;
  const list = document.getElementById("notes");
  list.replaceChildren(...body.notes.map((note) => {
    const item = document.createElement("li");
    item.textContent = note.title;
    return item;
  }));
}
document.getElementById("add").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = new FormData(event.target).get("text");
  refresh("/api/notes", { method: "POST", body: text });
  event.target.reset();
});
refresh();
