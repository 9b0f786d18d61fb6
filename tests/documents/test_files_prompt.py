"""The system-prompt paragraph naming the attached files (agent.files, no Django)."""

from agent.files import FileInfo, files_prompt, with_files_prompt


class Library:
    def __init__(self, files):
        self.files = files

    def list(self):
        return self.files


def test_the_files_paragraph_is_added_once_and_follows_the_files():
    messages = [{"role": "system", "content": "You are kimiweb."}, {"role": "user", "content": "hi"}]
    pdf = FileInfo("report.pdf", "pdf", 12, "ready")
    with_files_prompt(messages, Library([pdf]))
    with_files_prompt(messages, Library([pdf, FileInfo("deck.pptx", "pptx", 0, "reading")]))
    system = messages[0]["content"]
    assert system.startswith("You are kimiweb.\n\nThe user attached these files")
    assert system.count("The user attached these files") == 1
    assert "report.pdf (PDF, 12 pages); deck.pptx (PowerPoint, still being read)" in system
    assert "[file name, p. N]" in system and messages[1] == {"role": "user", "content": "hi"}


def test_nothing_without_files():
    messages = [{"role": "system", "content": "You are kimiweb."}]
    with_files_prompt(messages, None)
    assert messages[0]["content"] == "You are kimiweb."
    assert files_prompt([]) == ""
