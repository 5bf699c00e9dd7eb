import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { V3Dashboard } from "./pages/V3Dashboard";
import "./styles.css";

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <V3Dashboard />
  </StrictMode>,
);
