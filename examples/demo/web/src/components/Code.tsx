/** A short code sample, shown under a page to say which hook it uses. */
export function Code({ title, children }: { title: string; children: string }) {
  return (
    <figure className="code">
      <figcaption>{title}</figcaption>
      <pre>
        <code>{children.trim()}</code>
      </pre>
    </figure>
  );
}
