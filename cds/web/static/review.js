// Accept and Override on the review page send real CDS Hooks feedback to the service.
"use strict";

function feedbackUrl(service) {
  return "/cds-services/" + encodeURIComponent(service) + "/feedback";
}

async function send(element, item) {
  const status = element.closest("article").querySelector(".feedback-status");
  item.card = element.dataset.card;
  item.outcomeTimestamp = new Date().toISOString();
  status.textContent = "Sending…";
  try {
    const response = await fetch(feedbackUrl(element.dataset.service), {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({feedback: [item]}),
    });
    const body = await response.json();
    status.textContent = response.ok
      ? (item.outcome === "accepted" ? "Accepted" : "Overridden") + ": feedback stored."
      : "Not stored: " + body.message;
    if (response.ok) {  // one answer per card: the buttons stop once it is stored
      element.closest("article").querySelectorAll("button.accept, form.override button, form.override select, "
        + "form.override textarea").forEach((control) => { control.disabled = true; });
    }
  } catch (error) {
    status.textContent = "Not stored: the service could not be reached.";
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.accept");
  if (button) {
    send(button, {outcome: "accepted", acceptedSuggestions: [{id: button.dataset.suggestion}]});
  }
});

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form.override");
  if (!form) {
    return;
  }
  event.preventDefault();
  const option = form.elements.reason.selectedOptions[0];
  const reason = {reason: {system: option.dataset.system, code: option.value, display: option.textContent}};
  const comment = form.elements.comment.value.trim();
  if (comment) {
    reason.userComment = comment;
  }
  send(form, {outcome: "overridden", overrideReason: reason});
});

// Sortable tables: a header button sorts by its column (numbers as numbers), again to reverse.
document.addEventListener("click", (event) => {
  const button = event.target.closest("table.sortable th button.sort");
  if (!button) {
    return;
  }
  const header = button.closest("th");
  const table = header.closest("table");
  const column = Array.from(header.parentNode.children).indexOf(header);
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th[aria-sort]").forEach((th) => th.removeAttribute("aria-sort"));
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const body = table.tBodies[0];
  const key = (row) => row.children[column].textContent.trim();
  const rows = Array.from(body.rows).sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    const numeric = !isNaN(parseFloat(x)) && !isNaN(parseFloat(y));
    const order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
    return ascending ? order : -order;
  });
  rows.forEach((row) => body.appendChild(row));
});
